"""Tests of the automatic temperature (--target-entropy): the bounded dual step, the entropy it
follows (per step, on a multi-step env), the target's own schedule, and what a run with an
adapting T must do at --validate, --resume and with a target the actions cannot reach."""

import math
import re

import numpy as np
import pytest
import torch

import annealing_config
import policy_annealing as pa
import tree_env
from testing_helpers import SMOKE, config, parsed_config, recorded, train

F64 = torch.float64


def test_the_dual_step_is_bounded_by_its_largest_change_floor_and_ceiling():
    """Far from the target, log T moves by max_change and no more; T never leaves [floor,
    ceiling] however long the entropy stays on one side (the probes drove T to 2e-4)."""
    step = dict(step=1.0, max_change=0.1, floor=0.01, ceiling=5.0)
    assert pa.dual_temperature_step(1.0, 0.0, 10.0, **step) == pytest.approx(math.exp(0.1))
    assert pa.dual_temperature_step(1.0, 10.0, 0.0, **step) == pytest.approx(math.exp(-0.1))
    assert pa.dual_temperature_step(1.0, 0.30, 0.35, **step) == pytest.approx(math.exp(0.05))
    temperature = 1.0
    for _ in range(100):  # the entropy stays above the target: T falls to the floor, not below
        temperature = pa.dual_temperature_step(temperature, 2.0, 0.1, **step)
    assert temperature == 0.01
    for _ in range(100):
        temperature = pa.dual_temperature_step(temperature, 0.0, 1.0, **step)
    assert temperature == 5.0


def test_the_target_anneals_linearly_over_the_budget_and_is_held_without_an_end():
    cfg = config("Tree-v0", target_entropy=0.9, target_entropy_end=0.3, temp_start=1.0)
    assert [cfg.target_entropy_at(p) for p in (0, 0.5, 1)] == pytest.approx([0.9, 0.6, 0.3])
    held = config("Tree-v0", target_entropy=0.9, temp_start=1.0)
    assert held.target_entropy_at(1.0) == 0.9


def test_the_loops_dual_step_follows_the_annealed_target():
    """next_temperature, the training loop's T update, steps toward the target of the budget's
    progress: at the start (target 0.9, above the batch's 0.6 nats a step) T rises, at the end
    (target 0.3, below it) T falls, each by exactly the dual step from the batch's entropy."""
    cfg = config("Tree-v0", target_entropy=0.9, target_entropy_end=0.3, temp_start=1.0)
    batch = type("Batch", (), {"mean_entropy": 0.6})()
    bounds = cfg.temp_lr, cfg.temp_max_step, cfg.temp_min, cfg.temp_max
    for progress, target in ((0.0, 0.9), (1.0, 0.3)):
        expected = pa.dual_temperature_step(0.5, 0.6, target, *bounds)
        assert pa.next_temperature(cfg, batch, 0.5, progress) == expected
    assert pa.next_temperature(cfg, batch, 0.5, 0.0) > 0.5 > pa.next_temperature(cfg, batch, 0.5, 1)


def soft_optimal_step_entropy(env: tree_env.TreeEnv, temperature: float) -> float:
    """Per-step entropy of the law at T on a tree whose episodes all have `depth` steps: the
    expected sum of pi*'s entropies along a trajectory, over its length.  Soft value iteration
    from the leaves: Q(s, a) = r(s, a) + V(s'), V(s) = T logsumexp(Q / T)."""
    values, policies = {}, {}

    def value(node):
        if not env.children[node]:
            return 0.0
        q = torch.tensor(env.rewards[node], dtype=F64)
        q = q + torch.tensor([value(child) for child in env.children[node]], dtype=F64)
        policies[node] = torch.log_softmax(q / temperature, -1)
        values[node] = float(temperature * torch.logsumexp(q / temperature, -1))
        return values[node]

    value(0)

    def expected_entropy(node):  # sum of entropies along the rest of the trajectory
        if not env.children[node]:
            return 0.0
        log_pi = policies[node]
        ahead = torch.tensor([expected_entropy(child) for child in env.children[node]], dtype=F64)
        return float(pa.policy_entropy(log_pi) + (log_pi.exp() * ahead).sum())

    depth = len(env.trajectories()[0][1])
    assert all(len(actions) == depth for _, actions, _ in env.trajectories())
    return expected_entropy(0) / depth


@pytest.mark.exact
@pytest.mark.slow
def test_the_dual_step_settles_t_where_the_laws_entropy_a_step_is_the_target(tmp_path):
    """A depth-2 tree (every episode 2 steps): the law's entropy a step H(T) is computed by soft
    value iteration.  With --target-entropy H(0.3), T starts at 1 and must settle at 0.3; the
    entropy followed is per step (an episode's sum would settle T elsewhere)."""
    kwargs = {"depth": 2, "early_end": 0.0}
    env = tree_env.TreeEnv(**kwargs)
    target = soft_optimal_step_entropy(env, 0.3)
    assert soft_optimal_step_entropy(env, 1.0) > target + 0.1  # far from the start's
    cfg = config("Tree-v0", env_kwargs=kwargs, iterations=80, target_entropy=target,
                 temp_start=1.0, temp_end=1.0, temp_lr=0.5, lr_decay=False)  # fmt: skip
    temperatures = recorded(train(cfg, tmp_path)["history"])
    assert temperatures[0] == 1.0
    assert np.mean(temperatures[-20:]) == pytest.approx(0.3, rel=0.05)


def adapting_run(tmp_path, **overrides):
    """A short Tree-v0 run whose T adapts (and moves: the target is far below the start's)."""
    adapting = dict(target_entropy=0.2, temp_start=1.0, temp_end=1.0, temp_lr=0.5, lr_decay=False)
    cfg = config("Tree-v0", **{**SMOKE, **adapting, "out": str(tmp_path), **overrides})
    return train(cfg, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("adapts", [True, False])
def test_validate_takes_the_exact_kl_at_the_t_of_the_runs_last_iteration(tmp_path, adapts):
    """--validate's KL is the summary's: at the T the checkpoint's policy last trained at, an
    adapting T's (not the next batch's, one dual step on) or a schedule's (not --temp-end, which
    the last iteration starts short of)."""
    if adapts:
        summary = adapting_run(tmp_path)
    else:
        scheduled = dict(temp_start=2.0, temp_end=0.3, lr_decay=False)
        summary = train(config("Tree-v0", **{**SMOKE, **scheduled}), tmp_path)
    last = summary["history"][-1]["temperature"]
    assert last not in (1.0, 2.0, 0.3)  # it moved, and did not end where it was set to
    cfg = parsed_config(["--validate", "--load-model", str(tmp_path / "checkpoint.pt")])
    assert cfg.temp_start == cfg.temp_end == last
    agent, _ = pa.load(tmp_path / "checkpoint.pt")
    kl = pa.make_env(cfg).unwrapped.exact_trajectory_kl(agent, cfg.temp_start)
    assert kl == summary["summary"]["exact_kl"]


@pytest.mark.parametrize("name", annealing_config.CONTROL)
def test_the_options_of_the_automatic_temperature_need_a_target(name):
    with pytest.raises(pa.UserError, match="give one, or drop"):
        annealing_config.make_config("CartPole-v1", "grouped", **{name: 0.5})


@pytest.mark.parametrize(
    "overrides, expect",
    [
        (dict(target_entropy_end=0.0), "would mean a held target"),
        (dict(temp_start=0.5, temp_min=0.6), "must lie in [--temp-min, --temp-max]"),
        (dict(temp_start=20.0), "must lie in [--temp-min, --temp-max]"),
    ],
)
def test_bad_bounds_and_ends_of_the_automatic_temperature_are_refused(overrides, expect):
    with pytest.raises(pa.UserError, match=re.escape(expect)):
        annealing_config.make_config("CartPole-v1", "grouped", target_entropy=0.3, **overrides)


@pytest.mark.slow
def test_resume_with_a_larger_budget_is_accepted_when_t_adapts(tmp_path):
    """No fixed schedule to bend: T adapts (here from a --temp-start apart from the saved
    --temp-end, which T never follows).  A target that moves over the budget still refuses."""
    adapting_run(tmp_path, temp_start=0.5)
    cfg = parsed_config(["--resume", str(tmp_path), "--iterations", "4"])
    assert cfg.iterations == 4 and cfg.target_entropy == 0.2
    moving = tmp_path / "moving"
    adapting_run(moving, target_entropy_end=0.1)
    with pytest.raises(pa.UserError, match="bend"):
        parsed_config(["--resume", str(moving), "--max-env-steps", "99"])


@pytest.mark.parametrize(
    "env, target, allowed",
    [
        ("CartPole-v1", -0.1, "0 to 0.693"),  # Discrete(2): entropy in [0, log 2]
        ("CartPole-v1", 0.8, "0 to 0.693"),
        ("CartPole-v1", math.log(2), "0 to 0.693"),  # the uniform law: T = inf
        ("Pendulum-v1", 1.5, "-inf to 1.39"),  # torque in [-2, 2]: at most log 4
        ("QuadraticBandit-v0", -4.0, "-3.58 to 3.42"),  # no bounds: -5 < log sigma < 2
    ],
)
def test_a_target_the_actions_cannot_reach_is_refused_before_anything_is_written(
    tmp_path, capsys, env, target, allowed
):
    out = tmp_path / "run"
    code = pa.main(["--env", env, "--target-entropy", repr(target), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "cannot be reached" in err and allowed in err, err
    assert not out.exists()
    cfg = annealing_config.make_config(env, "grouped", target_entropy=target)
    with pytest.raises(pa.UserError, match="cannot be reached"):
        pa.train(cfg, out)  # the API refuses it too, before the run directory
    assert not out.exists()
    reachable = annealing_config.make_config(env, "grouped", target_entropy=0.5)
    pa.make_env(reachable)  # inside the bounds: made
    end = annealing_config.make_config(
        env, "grouped", target_entropy=0.5, target_entropy_end=target
    )
    with pytest.raises(pa.UserError, match="--target-entropy-end"):  # the end is checked too
        pa.make_env(end)


@pytest.mark.slow
def test_the_final_evaluation_reports_the_sampled_policys_entropy_only(tmp_path):
    """A squashed Gaussian's entropy formula at its mean is no entropy of the greedy policy (it
    can exceed the box's maximum): only the sampled policy's is reported."""
    cfg = config("Pendulum-v1", **{**SMOKE, "iterations": 1})
    final = train(cfg, tmp_path)["summary"]["final_eval"]
    assert "entropy" not in final["greedy"]
    assert final["sampled"]["entropy"] <= math.log(4)  # the uniform law on [-2, 2]


@pytest.mark.parametrize(
    "env, actions, expected",
    [
        ("CartPole-v1", 2, None),
        ("LunarLander-v3", 4, None),
        ("Pendulum-v1", None, -1 + math.log(2)),  # one torque in [-2, 2]: half-range 2
        ("HalfCheetah-v5", None, -6.0),  # six torques in [-1, 1]
    ],
)
def test_target_entropy_auto_is_the_action_spaces_default(env, actions, expected):
    """Discrete(n): the entropy of 0.9 on one action and 0.1 spread over the others (ALF's);
    a Box: SAC's -dim(A) on actions scaled to [-1, 1], here on the box's own scale.  The config
    holds the number, never "auto"."""
    if actions:
        law = torch.tensor([0.9] + [0.1 / (actions - 1)] * (actions - 1), dtype=torch.float64)
        expected = pa.policy_entropy(law.log()).item()
    from_api = annealing_config.make_config(env, "grouped", target_entropy="auto")
    from_cli = parsed_config(["--env", env, "--target-entropy", "auto"])
    for cfg in (from_api, from_cli):
        assert isinstance(cfg.target_entropy, float)
        assert cfg.target_entropy == pytest.approx(expected, abs=1e-12)
    pa.make_env(from_api)  # reachable


def test_a_target_entropy_that_is_neither_a_number_nor_auto_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert pa.main(["--target-entropy", "high", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "neither a number nor auto" in err and not out.exists()


def test_target_entropy_auto_of_an_unbounded_box_is_minus_its_dim_and_bad_kwargs_are_one_line():
    """QuadraticBandit-v0 (unbounded, 3 dims here): -3.  A bad env_kwargs is refused as without
    auto (checked before the env is made for the target), not a traceback."""
    kwargs = dict(mean=[0.5, -1.0, 2.0], curvature=[1.0, 4.0, 0.5])
    cfg = annealing_config.make_config(
        "QuadraticBandit-v0", "grouped", target_entropy="auto", env_kwargs=kwargs
    )
    assert cfg.target_entropy == -3.0
    with pytest.raises(pa.UserError, match="must be a dict"):
        annealing_config.make_config("QuadraticBandit-v0", target_entropy="auto", env_kwargs=None)
