"""Tests of what a run does besides the method (run_io.py, and policy_annealing.main's handling of
bad input): the command line's one-line errors, checkpoints, run directories, --resume and
signals.  The method itself is tested in test_policy_annealing.py."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import annealing_config
import policy_annealing as pa
import run_io
import testing_helpers
from testing_helpers import (
    SMOKE,
    SMOKE_ARGS,
    config,
    parsed_config,
    train,
    validate_model,
    without_wall_time,
)

HERE = Path(__file__).parent


class GridActions(gym.Env):
    """Box observations, but (2, 2) Box actions: not a flat Box, refused."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,))
    action_space = gym.spaces.Box(-1.0, 1.0, (2, 2))


class HalfBoundedActions(GridActions):
    """A flat Box with one bounded and one unbounded dimension: refused (no tanh squash fits)."""

    action_space = gym.spaces.Box(np.array([-1, -np.inf], "f4"), np.array([1, np.inf], "f4"))


gym.register("GridActions-v0", entry_point=GridActions)
gym.register("HalfBoundedActions-v0", entry_point=HalfBoundedActions)


def run_main(capsys, *argv):
    code = pa.main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def one_line_error(capsys, *argv, expect):
    code, err = run_main(capsys, *argv)
    assert code == 2 and err.startswith("error:") and "\n" not in err, err
    assert "Traceback" not in err and expect in err, err
    return err


# ---- command line: bad input is one line, no traceback -------------------------------------------


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["--env", "NoSuchEnv-v0"], "unknown env"),
        (["--env", "GridActions-v0"], "it needs Discrete or a flat Box"),
        (["--env", "HalfBoundedActions-v0"], "it needs all bounds or none"),
        (["--env", "QuadraticBandit-v0", "--env-kwargs", '{"mean": [0, 1]}'], "bad --env-kwargs"),
        (["--env-kwargs", "{gravity: -5}"], "--env-kwargs: not valid JSON (Expecting property"),
        (["--env-kwargs", "[1]"], "--env-kwargs: [1] is not a JSON object"),
        (["--env", "nomodule:Env-v0"], "--env nomodule:Env-v0: cannot import nomodule"),
        (["--env", "tree_env:Nope-v0"], "unknown env 'tree_env:Nope-v0'"),
        (["--env", "FrozenLake-v1"], "flat Box observation"),
        (["--algo", "sac"], "invalid choice"),
        (["--group-size", "0"], "--group-size must be a positive integer"),
        (["--num-groups", "-1"], "--num-groups must be a positive integer"),
        (["--iterations", "0"], "--iterations must be a positive integer"),
        (["--lr", "0"], "--lr must be a positive number"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--temp-start", "-1"], "--temp-start must be a finite number >= 0"),
        (["--temp-end", "-0.1"], "--temp-end must be a finite number >= 0"),
        (["--temp-start", "0.5", "--temp-end", "0"], "cannot reach or leave 0"),
        (["--algo", "err", "--temp-start", "0"], "cannot reach or leave 0"),
        (["--algo", "grouped", "--temp-start", "0", "--temp-end", "0"], "needs a temperature > 0"),
        (["--algo", "grouped", "--group-size", "1"], "--group-size must be >= 2"),
        (["--algo", "value", "--path-length", "-1"], "--path-length must be >= 0"),
        (["--algo", "err", "--centre-residuals"], "is an option of --algo value;"),
        (["--algo", "grouped", "--policy-steps", "5"], "--policy-steps is an option of --algo"),
        (["--algo", "grouped", "--entropy-bonus", "0.1"], "drop it for --algo grouped"),
        (["--algo", "grouped", "--path-length", "3"], "--path-length is an option of"),
        (["--algo", "err", "--path-length", "2"], "drop it for --algo err"),
        (["--algo", "value", "--minibatches", "7"], "--minibatches is an option of --algo err"),
        (["--algo", "value", "--baseline", "group"], "--baseline is an option of --algo err"),
        (["--algo", "value", "--trust-region", "0.1"], "--algo grouped; drop it"),
        (["--algo", "grouped", "--ppo-clip", "0.1"], "--ppo-clip is an option of --algo err"),
        (["--algo", "err", "--ppo-clip", "0"], "--ppo-clip must be a positive number"),
        (["--algo", "err", "--target-kl", "-0.01"], "--target-kl must be a finite number >= 0"),
        (["--algo", "value", "--target-kl", "0.01"], "--target-kl is an option of --algo err"),
        (["--target-entropy", "0.5", "--temp-end", "0.3"], "drop --temp-end"),
        (["--target-entropy", "nan"], "--target-entropy must be a finite number"),
        (["--target-entropy", "-1", "--temp-lr", "0"], "--temp-lr must be in (0, 1]"),
        (["--temp-lr", "0.1"], "give one, or drop --temp-lr"),
        (["--env"], "expected one argument"),
        (["--iterations", "two"], "invalid int value"),
        (["--iter", "2"], "unrecognized arguments: --iter 2"),  # no abbreviation of --iterations
        (["--env-kw", "{}"], "unrecognized arguments: --env-kw"),
        (["--validate"], "add --load-model"),
        (["--env", "Tree-v0", "--render", "video"], "cannot --render video"),
    ],
)
def test_bad_arguments_give_one_clear_line(capsys, tmp_path, argv, expect):
    one_line_error(capsys, *argv, "--out", str(tmp_path / "run"), expect=expect)
    assert not (tmp_path / "run").exists()  # nothing created for a refused run


def test_closed_bounds_are_accepted_at_their_ends():
    """[0, 1] takes both ends (GAE lambda 0: TD(0) advantages; 1: Monte Carlo), and confirming
    with as many episodes as the evaluation is allowed; a step past each end is refused."""
    for value in (0.0, 1.0):
        assert pa.make_config("CartPole-v1", "err", gae_lambda=value).gae_lambda == value
    refusal = re.escape("--gae-lambda must be in [0, 1], got 1.01")
    with pytest.raises(run_io.UserError, match=refusal):
        pa.make_config("CartPole-v1", "err", gae_lambda=1.01)
    assert pa.make_config(eval_episodes=40, confirm_episodes=40).confirm_episodes == 40
    with pytest.raises(run_io.UserError, match="--confirm-episodes must be >= --eval-episodes"):
        pa.make_config(eval_episodes=40, confirm_episodes=39)


@pytest.mark.parametrize(
    "overrides, expect",
    [
        (dict(algo="ppo"), "--algo must be one of grouped, value, err, got 'ppo'"),
        (dict(iterations="20"), "--iterations must be an integer, got '20'"),
        (dict(iterations=True), "--iterations must be an integer, got True"),
        (dict(seed=1.5), "--seed must be an integer"),
        (dict(lr="0.1"), "--lr must be a number"),
        (dict(stop_when_solved=1), "--stop-when-solved must be True or False"),
        (dict(env_kwargs='{"tree_seed": 1}'), "--env-kwargs must be a dict"),
        (dict(env=None), "--env must be a string"),
        (dict(load_model=Path("runs/x")), "--load-model must be a string (a path) or None"),
        (dict(render="gif"), "--render must be one of human, video"),
        (dict(algo="err", baseline="mean"), "--baseline must be one of value, group"),
        (dict(eval_episodes=50, confirm_episodes=10), "--confirm-episodes must be >= --eval-ep"),
    ],
)
def test_the_python_api_refuses_what_the_command_line_would(tmp_path, overrides, expect):
    """make_config and train (a Config built by hand) raise the CLI's UserError, before anything
    is written: a wrong type or choice is not left to fail inside the run."""
    with pytest.raises(run_io.UserError, match=re.escape(expect)):
        pa.make_config(**overrides)
    with pytest.raises(run_io.UserError, match=re.escape(expect)):
        pa.train(dataclasses.replace(pa.Config(), **overrides), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_bad_env_keyword_is_named_not_taken_for_an_unknown_env(capsys, tmp_path):
    argv = ["--env", "LunarLander-v3", "--env-kwargs", '{"gravty": -5}', "--out", tmp_path / "run"]
    expect = "--env-kwargs: LunarLander-v3 takes no keyword 'gravty'"
    err = one_line_error(capsys, *map(str, argv), expect=expect)
    assert "gravity" in err and "unknown env" not in err, err
    assert not (tmp_path / "run").exists()


def test_a_real_process_reports_bad_input_without_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "policy_annealing.py"),
            "--env",
            "NoSuchEnv-v0",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "unknown env" in result.stderr


# ---- checkpoints ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cartpole")
    train(config(**SMOKE), run_dir)
    return run_dir


def test_bad_checkpoints_give_one_clear_line(capsys, tmp_path, cartpole_run):
    checkpoint = cartpole_run / "checkpoint.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:300])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(2000))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    validate = ["--validate", "--eval-episodes", "2", "--load-model"]
    one_line_error(capsys, *validate, str(tmp_path / "missing.pt"), expect="no such file")
    for broken in (truncated, garbage):  # one line for a user, no exception's name in it
        err = one_line_error(capsys, *validate, str(broken), expect="corrupt or truncated")
        assert "Error" not in err, err
    one_line_error(capsys, *validate, str(foreign), expect="not a policy-annealing checkpoint")
    one_line_error(
        capsys,
        *validate,
        str(checkpoint),
        "--env",
        "LunarLander-v3",
        expect="does not fit this env",
    )
    one_line_error(
        capsys,
        "--env",
        "LunarLander-v3",
        "--load-model",
        str(checkpoint),
        "--out",
        str(tmp_path / "x"),
        expect="does not fit this env",
    )
    assert not (tmp_path / "x").exists()  # a refused warm start leaves no run directory
    code, _ = run_main(capsys, *validate, str(checkpoint))
    assert code == 0


def test_a_mujoco_warning_is_one_line_on_stderr_and_no_log_file(capfd, tmp_path, monkeypatch):
    """MuJoCo 4 warns at each HalfCheetah-v5 it compiles and appends to MUJOCO_LOG.TXT in the
    working directory: a run's 115 envs gave 115 lines and a file left behind."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_io, "MUJOCO_WARNINGS", set())  # as in a fresh process
    cfg = pa.make_config("HalfCheetah-v5", "err")
    for _ in range(3):
        run_io.make_env(cfg).close()
    captured = capfd.readouterr()
    assert (captured.out + captured.err).count("settotalmass") == 1
    assert captured.err.startswith("MuJoCo: ") and not list(tmp_path.iterdir())


def test_load_model_takes_the_checkpoint_of_a_run_directory(capsys, tmp_path, cartpole_run):
    """--load-model runs/X: the checkpoint.pt inside, for --validate and a warm start alike, as
    --help says; a directory without one is one line."""
    assert pa.main(["--validate", "--eval-episodes", "2", "--load-model", str(cartpole_run)]) == 0
    assert f"({cartpole_run / 'checkpoint.pt'})" in capsys.readouterr().out
    cfg = pa.make_config(load_model=str(cartpole_run), **SMOKE, eval_episodes=2, quiet=True)
    assert cfg.load_model == str(cartpole_run / "checkpoint.pt")
    one_line_error(capsys, "--validate", "--load-model", str(tmp_path), expect="no checkpoint.pt")
    with pytest.raises(SystemExit):
        pa.main(["--help"])
    assert "this checkpoint.pt, or a run directory's" in " ".join(capsys.readouterr().out.split())


def test_validate_takes_the_env_the_checkpoint_was_trained_on(capsys, tmp_path):
    train(config("Tree-v0", **SMOKE, env_kwargs={"tree_seed": 1}), tmp_path)
    assert pa.main(["--validate", "--load-model", str(tmp_path / "checkpoint.pt")]) == 0
    assert "Tree-v0: greedy return" in capsys.readouterr().out


def test_checkpoint_round_trip_reproduces_the_final_greedy_evaluation(tmp_path):
    """--validate on the saved checkpoint sees the same episodes (same evaluation seeds) and
    must get exactly the returns the run itself measured with its in-memory policy."""
    cfg = config(**{**SMOKE, "iterations": 3, "final_eval_episodes": 4, "eval_episodes": 4})
    summary = train(cfg, tmp_path)["summary"]
    returns = validate_model(dataclasses.replace(cfg, load_model=str(tmp_path / "checkpoint.pt")))
    assert len(returns) == 4
    assert float(returns.mean()) == summary["final_eval"]["greedy"]["mean"]
    assert float(returns.std()) == summary["final_eval"]["greedy"]["std"]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    """The third update's loss turns nan: the run stops with a message naming it, and the
    checkpoint of iteration 2 stays, loadable and finite."""
    real_update, real_loss, updates = pa.update_grouped, pa.grouped_loss, []

    def counting_update(*args):
        updates.append(1)
        return real_update(*args)

    def poisoned_loss(*args):
        return real_loss(*args) * (float("nan") if len(updates) >= 3 else 1.0)

    monkeypatch.setitem(pa.UPDATES, "grouped", counting_update)
    monkeypatch.setattr(pa, "grouped_loss", poisoned_loss)
    cfg = config(**{**SMOKE, "iterations": 5, "trust_region": 0.0})
    experiment = train(cfg, tmp_path)
    assert "nan" in experiment["summary"]["error"] and len(experiment["history"]) == 2
    checkpoint = run_io.load_checkpoint(tmp_path / "checkpoint.pt")
    assert checkpoint["state"]["iteration"] == 2
    assert all(torch.isfinite(t).all() for t in checkpoint["agent"].values())


# ---- run directories and --resume ----------------------------------------------------------------


def test_out_holding_a_run_is_refused_unless_resume_or_overwrite(capsys, tmp_path, cartpole_run):
    one_line_error(capsys, "--out", str(cartpole_run), expect="already holds a run")
    (tmp_path / "a-file").write_text("")
    one_line_error(capsys, "--out", str(tmp_path / "a-file"), expect="is a file")
    one_line_error(capsys, "--out", str(cartpole_run.parent), expect="holds other files")
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("experiment.json", "checkpoint.pt"):
        (copy / name).write_bytes((cartpole_run / name).read_bytes())
    code, _ = run_main(
        capsys,
        "--out",
        str(copy),
        "--overwrite",
        "--iterations",
        "1",
        "--num-groups",
        "2",
        "--group-size",
        "2",
        "--optim-steps",
        "1",
        "--quiet",
        "--eval-episodes",
        "2",
    )
    assert code == 0 and len(json.loads((copy / "experiment.json").read_text())["history"]) == 1


def test_an_out_that_cannot_be_created_is_one_line_and_leaves_nothing(capsys, tmp_path):
    """A path under a file, one the system refuses, a name too long: one line, and no folder of
    the path is left behind (tmp/new was made on the way to the long name)."""
    (tmp_path / "README.md").write_text("")
    under_a_file = str(tmp_path / "README.md" / "run1")
    one_line_error(capsys, *SMOKE_ARGS, "--out", under_a_file, expect="README.md is a file")
    one_line_error(capsys, *SMOKE_ARGS, "--out", "/proc/x", expect="/proc/x cannot be created")
    too_long = str(tmp_path / "new" / ("x" * 300))
    one_line_error(capsys, *SMOKE_ARGS, "--out", too_long, expect="cannot be created")
    assert [path.name for path in tmp_path.iterdir()] == ["README.md"]
    assert not Path("/proc/x").exists()


def test_the_default_run_directory_name_is_safe_for_any_env_id(tmp_path, monkeypatch):
    """A custom id module:Env-v0 (or a namespaced one, ALE/Pong-v5) names one folder in runs/,
    with no colon or slash in its name."""
    monkeypatch.chdir(tmp_path)
    for env_id, safe in [("tree_env:Tree-v0", "tree_env_Tree-v0"), ("ALE/Pong-v5", "ALE_Pong-v5")]:
        run_dir = run_io.run_directory(dataclasses.replace(config(), env=env_id, out=""))
        assert run_dir.parent == Path("runs") and run_dir.name.startswith(f"{safe}-grouped-s0-")
    assert all(":" not in path.name for path in (tmp_path / "runs").iterdir())


def test_resume_extends_a_run_and_refuses_flags_that_would_change_it(
    capsys, tmp_path, cartpole_run
):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("experiment.json", "checkpoint.pt"):
        (copy / name).write_bytes((cartpole_run / name).read_bytes())
    one_line_error(capsys, "--resume", str(copy), "--lr", "0.1", expect="drop --lr")
    code, _ = run_main(capsys, "--resume", str(copy), "--iterations", "3", "--quiet")
    experiment = json.loads((copy / "experiment.json").read_text())
    assert code == 0 and [r["iteration"] for r in experiment["history"]] == [1, 2, 3]
    saved = json.loads((cartpole_run / "experiment.json").read_text())["config"]
    changed = {k for k, v in experiment["config"].items() if saved.get(k) != v}
    assert changed <= {"iterations", "resume", "quiet", "out", "versions"}, changed


def test_resume_of_a_finished_run_is_refused_and_changes_nothing(capsys, tmp_path):
    """A run that ended by itself, resumed with no budget that extends it: one line saying what
    would, and its files byte for byte as they were.  Extended, the final line tells this
    process's times from the whole run's (they were mixed: this process's 'in all' beside the
    run's training and evaluation)."""
    run = tmp_path / "run"
    assert run_main(capsys, *SMOKE_ARGS, "--out", str(run))[0] == 0
    files = {path.name: path.read_bytes() for path in run.iterdir()}
    for extra in ([], ["--iterations", "1"], ["--no-quiet"]):
        err = one_line_error(capsys, "--resume", str(run), *extra, expect="the run is finished")
        assert "stopped by iterations after 1 iterations" in err and "--iterations above 1" in err
    assert {path.name: path.read_bytes() for path in run.iterdir()} == files
    state = run_io.load_checkpoint(run / "checkpoint.pt")["state"]
    assert pa.main(["--resume", str(run), "--iterations", "2", "--no-quiet"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads((run / "experiment.json").read_text())["summary"]
    training, evaluating = (summary[key] - state[key] for key in ("wall_time", "eval_time"))
    this_process = f"s in all: {training:.1f} s training, {evaluating:.1f} s evaluating;"
    assert "; this process " in line and this_process in line, line
    whole = f"the run since its start {summary['wall_time']:.1f} s training, "
    assert f"{whole}{summary['eval_time']:.1f} s evaluating -> {run}" in line, line


def test_resume_of_a_run_that_spent_its_step_budget_names_that_budget(capsys, tmp_path):
    run = tmp_path / "run"
    argv = [*SMOKE_ARGS, "--iterations", "3", "--max-env-steps", "5", "--out", str(run)]
    assert run_main(capsys, *argv)[0] == 0
    steps = json.loads((run / "experiment.json").read_text())["summary"]["env_steps"]
    err = one_line_error(capsys, "--resume", str(run), expect="stopped by env-step budget")
    assert f"pass --max-env-steps above {steps} (nothing was changed)" in err, err


@pytest.mark.parametrize(
    "config_overrides, summary_overrides, expect",
    [
        ({}, {}, "pass --iterations above 4"),
        ({"iterations": 9, "max_minutes": 0.5}, {"wall_time": 30.5}, "--max-minutes above 0.51"),
        ({"iterations": 9, "max_minutes": 0.5}, {"wall_time": 30.0}, "--max-minutes above 0.5"),
        ({"iterations": 9, "max_env_steps": 80}, {}, "--max-env-steps above 80"),  # spent exactly
        ({"stop_when_solved": True, "iterations": 9}, {"solved_iteration": 3}, "stops when solved"),
        ({"temp_start": 0.5, "temp_end": 0.1}, {}, "its schedules end there"),
        ({}, {"error": "interrupted"}, None),  # not finished: it goes on
        ({"iterations": 5}, {}, None),  # a larger --iterations extends it
    ],
)
def test_what_a_finished_run_needs_to_go_on(tmp_path, config_overrides, summary_overrides, expect):
    cfg = dataclasses.replace(config(**SMOKE), iterations=4, resume=str(tmp_path))
    cfg = dataclasses.replace(cfg, **config_overrides)
    summary = dict(iterations=4, env_steps=80, wall_time=1.0, stopped_by="iterations", error=None,
                   solved_iteration=None)  # fmt: skip
    summary.update(summary_overrides)
    (tmp_path / "experiment.json").write_text(json.dumps({"summary": summary}))
    if expect is None:
        annealing_config.refuse_a_finished_run(cfg)
    else:
        with pytest.raises(run_io.UserError, match=re.escape(expect)):
            annealing_config.refuse_a_finished_run(cfg)


@pytest.mark.slow
@pytest.mark.parametrize(
    "env, algo, overrides",
    [
        ("CartPole-v1", "grouped", testing_helpers.SCHEDULED),  # T and lr follow the budget
        # a tanh-Gaussian, the observation normaliser, GAE's V and an adapting T (its own state)
        ("Pendulum-v1", "err", dict(testing_helpers.SMOKE, target_entropy=-1.0, temp_lr=0.5)),
    ],
)
def test_resume_continues_a_run_exactly(tmp_path, monkeypatch, env, algo, overrides):
    cfg = config(env, algo, **{**overrides, "iterations": 5}, out=str(tmp_path / "run"))
    straight = train(cfg, tmp_path / "straight")
    testing_helpers.interrupt_in_update(monkeypatch, algo, 4)  # after three whole iterations
    stopped = train(cfg, tmp_path / "run")
    assert stopped["summary"]["error"] == "interrupted" and len(stopped["history"]) == 3
    monkeypatch.undo()
    resumed_cfg = parsed_config(["--resume", cfg.out])
    resumed = train(resumed_cfg, tmp_path / "run")
    assert without_wall_time(resumed["history"]) == without_wall_time(straight["history"])
    assert resumed["summary"]["final_eval"] == straight["summary"]["final_eval"]
    if algo == "grouped":
        last = 0.8 * (0.1 / 0.8) ** (4 / 5)  # the 5th of 5 iterations trains 4/5 of the way
        assert testing_helpers.recorded(resumed["history"])[-1] == pytest.approx(last, rel=1e-12)
    else:  # T moved at every batch
        assert len(set(testing_helpers.recorded(resumed["history"]))) == 5


@pytest.mark.slow
def test_a_resumed_run_keeps_its_solve_and_confirms_nothing_again(tmp_path, monkeypatch):
    """Every evaluation crosses 475 and would confirm: the run is solved at iteration 1, then
    interrupted in its third update.  Resumed, it is still solved at 1 (read from its history)
    and no later crossing is confirmed again or listed."""
    calls = []

    def scripted(agent, envs, cfg, stream, greedy=False, confirm=False):
        calls.append((stream, confirm))
        return np.full(len(envs), 480.0), 0.5

    cfg = config(**{**SMOKE, "iterations": 4}, out=str(tmp_path / "run"))
    monkeypatch.setattr(pa, "evaluate", scripted)
    testing_helpers.interrupt_in_update(monkeypatch, "grouped", 3)  # two iterations kept
    assert train(cfg, tmp_path / "run")["summary"]["error"] == "interrupted"
    monkeypatch.undo()
    monkeypatch.setattr(pa, "evaluate", scripted)
    resumed = train(parsed_config(["--resume", cfg.out]), tmp_path / "run")
    assert resumed["summary"]["solved_iteration"] == 1 and len(resumed["history"]) == 4
    assert [record["iteration"] for record in resumed["summary"]["crossings"]] == [1]
    assert [call for call in calls if call[1]] == [(1, True)]


@pytest.mark.slow
def test_resume_refuses_a_budget_that_would_bend_a_schedule(capsys, tmp_path):
    run = tmp_path / "run"
    run_main(capsys, "--iterations", "2", "--num-groups", "2", "--group-size", "2",
             "--optim-steps", "1", "--eval-episodes", "2", "--confirm-episodes", "2",
             "--final-eval-episodes", "2", "--quiet", "--temp-start", "0.5", "--temp-end", "0.1",
             "--out", str(run))  # fmt: skip
    one_line_error(capsys, "--resume", str(run), "--iterations", "4", expect="--iterations 2")
    one_line_error(capsys, "--resume", str(run), "--max-env-steps", "99", expect="bend")
    history = json.loads((run / "experiment.json").read_text())["history"]
    assert len(history) == 2  # nothing was run or written by the refusals


def test_resuming_a_checkpoint_of_one_adam_group_gives_one_clear_line(capsys, tmp_path):
    """Before --value-lr, value and err runs kept policy and V in one Adam group."""
    train(config(algo="value", **SMOKE), tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    policy_group, value_group = checkpoint["optimizer"]["param_groups"]
    policy_group["params"] += value_group["params"]
    checkpoint["optimizer"]["param_groups"] = [policy_group]
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    one_line_error(capsys, "--resume", str(tmp_path), "--iterations", "3", expect="--overwrite")


def test_a_death_between_the_two_writes_resumes_consistently(capsys, tmp_path, monkeypatch):
    """experiment.json is written before checkpoint.pt: a process killed between them leaves the
    checkpoint one iteration behind, and --resume drops the extra record."""
    real = {name: getattr(run_io, name) for name in ("write_json", "save_checkpoint")}
    writes = []

    def dying(name):  # the fourth write is iteration 2's second: the process dies before it
        def write(*args):
            writes.append(name)
            if len(writes) == 4:
                raise RuntimeError("killed")
            return real[name](*args)

        return write

    for name in real:
        monkeypatch.setattr(run_io, name, dying(name))
    with pytest.raises(RuntimeError):
        train(config(**{**SMOKE, "iterations": 3}), tmp_path)
    for name in real:
        monkeypatch.setattr(run_io, name, real[name])
    code, _ = run_main(capsys, "--resume", str(tmp_path), "--quiet")
    history = json.loads((tmp_path / "experiment.json").read_text())["history"]
    assert code == 0 and [r["iteration"] for r in history] == [1, 2, 3]


# ---- --tensorboard -------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["CartPole-v1", "Tree-v0"])
def test_tensorboard_writes_the_history_as_scalars_at_env_steps(capsys, tmp_path, env):
    """Event files in the run directory hold each record's numbers, exact_kl too where the env
    has one; --overwrite replaces them; a run without --tensorboard writes none."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = train(config(env, **SMOKE, tensorboard=True), tmp_path)["history"]
    (events,) = tmp_path.glob("events.out.tfevents.*")
    scalars = EventAccumulator(str(tmp_path))
    scalars.Reload()
    tags = ["returns/train_return", "returns/eval_return", "charts/loss", "charts/entropy"]
    tags += ["charts/temperature", "charts/env_steps"] + ["charts/exact_kl"] * (env == "Tree-v0")
    assert set(tags) <= set(scalars.Tags()["scalars"]), scalars.Tags()
    for tag in tags:
        key = tag.split("/")[1]
        written = [(event.step, event.value) for event in scalars.Scalars(tag)]
        expected = [
            (record["env_steps"], pytest.approx(record[key], rel=1e-6)) for record in history
        ]
        assert written == expected, tag
    argv = [*SMOKE_ARGS, "--env", env, "--out", str(tmp_path), "--overwrite"]
    assert run_main(capsys, *argv)[0] == 0  # without --tensorboard, and the old file is gone
    assert not events.exists() and not list(tmp_path.glob("events.out.tfevents.*"))


def test_tensorboard_without_its_package_is_one_line_and_writes_nothing(
    capsys, tmp_path, monkeypatch
):
    for module in ("tensorboard", "torch.utils.tensorboard"):  # as if not installed
        monkeypatch.setitem(sys.modules, module, None)
    run = tmp_path / "run"
    one_line_error(capsys, *SMOKE_ARGS, "--tensorboard", "--out", str(run), expect="pip install")
    assert not run.exists()
    with pytest.raises(run_io.UserError, match="--tensorboard needs the tensorboard package"):
        pa.train(pa.Config(tensorboard=True), run)
    assert not run.exists()


# ---- signals -------------------------------------------------------------------------------------


def test_an_interrupt_in_the_first_iteration_keeps_nothing_and_says_so(
    capsys, tmp_path, monkeypatch
):
    real_sample = pa.sample_episodes

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # a real signal: Interrupted is raised here
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(pa, "sample_episodes", interrupted)
    code, err = run_main(capsys, *SMOKE_ARGS, "--out", str(tmp_path / "run"))
    assert code == 128 + signal.SIGINT and "nothing kept" in err and "--overwrite" in err
    monkeypatch.setattr(pa, "sample_episodes", real_sample)
    one_line_error(capsys, "--resume", str(tmp_path / "run"), expect="no checkpoint.pt")
    # a signal from that run does not stop the next one in the same process; without --quiet
    # it ends with its summary line
    next_run = [arg for arg in SMOKE_ARGS if arg != "--quiet"] + ["--out", str(tmp_path / "next")]
    assert pa.main(next_run) == 0
    out = capsys.readouterr().out
    assert "CartPole-v1 grouped seed 0: not solved; stopped by iterations after 1" in out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_keeps_completed_iterations_and_resume_continues_identically(tmp_path, sig):
    args = [
        "--iterations",
        "25",
        "--num-groups",
        "2",
        "--group-size",
        "2",
        "--optim-steps",
        "20",
        "--eval-every",
        "5",
        "--eval-episodes",
        "2",
        "--confirm-episodes",
        "2",
        "--final-eval-episodes",
        "2",
        "--seed",
        "3",
        "--quiet",
    ]
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(HERE / "policy_annealing.py"), *args, "--out", str(run_dir)],
        stderr=subprocess.PIPE,
        text=True,
    )
    experiment_path = run_dir / "experiment.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait (by polling, not sleeping blind) for 3 iterations
        try:
            if len(json.loads(experiment_path.read_text())["history"]) >= 3:
                break
        except (OSError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.01)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + sig, err
    assert "Traceback" not in err and "--resume" in err
    experiment = json.loads(experiment_path.read_text())  # valid JSON
    kept = experiment["summary"]["iterations"]
    assert 3 <= kept < 25 and len(experiment["history"]) == kept
    assert run_io.load_checkpoint(run_dir / "checkpoint.pt")["state"]["iteration"] == kept
    resumed = subprocess.run(
        [sys.executable, str(HERE / "policy_annealing.py"), "--resume", str(run_dir), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = train(parsed_config(args), tmp_path / "straight")
    final = json.loads(experiment_path.read_text())
    assert without_wall_time(final["history"]) == without_wall_time(uninterrupted["history"])
