"""Continuous actions: the Gaussian policy's math, every loss at the exact law of the quadratic
bandit (bandit_env.py, whose Boltzmann law is N(mu, T A^-1)), the three algorithms reaching that
law from a random start, and the continuous gymnasium envs from the plain command."""

import itertools
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import annealing_config
import bandit_env
import policy_annealing as pa
from testing_helpers import config, train

F64 = torch.float64
# Two bandits: 1 and 3 action dims, A diagonal with curvatures that differ by 8x in 3 dims and
# multiply to 2, not 1, so that sum_i log sigma_i (and a dropped one) is not 0 at T = 1.
BANDITS = {
    1: dict(mean=[0.5], curvature=[2.0]),
    3: dict(mean=[0.5, -1.0, 2.0], curvature=[1.0, 4.0, 0.5]),
}


# ---- the Gaussian's density, entropy and log-std bound -------------------------------------------


def test_gaussian_log_density_and_entropy_are_the_normal_distributions():
    """Against torch.distributions.Normal, summed over action dims, in float64."""
    generator = torch.Generator().manual_seed(0)
    mean, log_std = torch.randn(5, 3, generator=generator, dtype=F64).unbind(0)[:2]
    actions = torch.randn(7, 3, generator=generator, dtype=F64)
    normal = torch.distributions.Normal(mean, log_std.exp())
    expected = normal.log_prob(actions).sum(-1)
    assert torch.allclose(pa.gaussian_log_density(actions, mean, log_std), expected, atol=1e-12)
    assert torch.allclose(pa.gaussian_entropy(log_std), normal.entropy().sum(-1), atol=1e-12)


def test_log_std_bound_keeps_inside_and_starts_at_sigma_1():
    raw = torch.linspace(-30, 30, 601, dtype=F64)
    bounded = pa.bounded_log_std(raw)
    assert (bounded > -5).all() and (bounded < 2).all()  # low and high as in Agent.gaussian
    assert (bounded.diff() > 0).all()  # monotone: every sigma in the bounds has a raw value
    assert pa.bounded_log_std(torch.zeros((), dtype=F64)).abs() < 1e-12


def test_raw_log_std_is_the_inverse_of_the_bound():
    log_std = torch.linspace(-4.99, 1.99, 699, dtype=F64)
    raw = torch.tensor([pa.raw_log_std(float(x)) for x in log_std], dtype=F64)
    assert torch.allclose(pa.bounded_log_std(raw), log_std, atol=1e-12)
    assert pa.raw_log_std(0.0) == 0.0  # the default leaves the zero bias, bit for bit


@pytest.mark.parametrize("log_std", [-2.0, -0.7, 0.0, 1.0])
def test_init_log_std_sets_the_first_policys_sigma_at_every_observation(log_std):
    """--init-log-std (PPO's log_std_init): the first policy's log sigma, whatever the state (the
    last layer's weights have gain 0.01); the mean stays ~0."""
    cfg = annealing_config.make_config("HalfCheetah-v5", "err", init_log_std=log_std)
    agent = pa.make_agent(cfg, pa.make_env(cfg), with_value=True)
    obs = 3 * torch.randn(256, 17, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mean, first_log_std = agent.head.gaussian(agent.policy_outputs(obs))
    assert (first_log_std - log_std).abs().max() < 0.1 and mean.abs().max() < 0.1


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["--env", "CartPole-v1", "--init-log-std", "-1"], "drop it for Discrete(2) actions"),
        (["--env", "Pendulum-v1", "--init-log-std", "2"], "must lie in (-5, 2)"),
        (["--env", "Pendulum-v1", "--init-log-std", "-5"], "must lie in (-5, 2)"),
        (
            ["--env", "Pendulum-v1", "--init-log-std", "-1", "--load-model", "x.pt"],
            "brings its own",
        ),
    ],
)
def test_a_bad_init_log_std_is_one_line(tmp_path, capsys, argv, expect):
    out = tmp_path / "run"
    assert pa.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and expect in err and not out.exists(), err


def test_an_envs_default_init_log_std_does_not_refuse_a_loaded_policy():
    """HalfCheetah err starts at log sigma -0.7 by default: a warm start or --validate of its
    checkpoint (--load-model) is no request for a first sigma, so it is not refused."""
    values = annealing_config.defaults_for("HalfCheetah-v5", "err")
    assert values["init_log_std"] != 0
    annealing_config.check_config(pa.Config(**{**values, "load_model": "run/checkpoint.pt"}))


def test_gaussian_agent_samples_log_probs_and_greedy_means():
    """sample's log pi and entropies agree with log_prob_and_entropy; greedy is the mean; each
    dimension's sample spreads by its own sigma (e^-2, 1, e^1.5 here, not the init's ~1); act
    returns an array of the Box's shape."""
    unbounded = gym.spaces.Box(-np.inf, np.inf, (3,))
    agent = pa.Agent(2, unbounded, hidden=16, with_value=False, obs_norm=False, seed=1)
    with torch.no_grad():  # the log-std outputs' biases: raw values for log sigma = -2, 0, 1.5
        agent.policy[-1].bias[3:] = torch.logit(
            (torch.tensor([-2.0, 0.0, 1.5]) + 5) / 7
        ) - math.log(2.5)
    obs = torch.randn(4000, 2, generator=torch.Generator().manual_seed(2))
    generator = torch.Generator().manual_seed(3)
    actions, log_probs, entropies = agent.sample(obs, generator)
    again = agent.log_prob_and_entropy(obs, actions)
    assert torch.allclose(log_probs, again[0]) and torch.allclose(entropies, again[1])
    mean, log_std = agent.head.gaussian(agent.policy_outputs(obs))
    assert torch.allclose(log_std.mean(0), torch.tensor([-2.0, 0.0, 1.5]), atol=0.05)
    z = (actions - mean) / log_std.exp()
    assert (z.mean(0).abs() < 0.05).all() and ((z.std(0) - 1).abs() < 0.05).all()
    correlations = np.corrcoef(z.detach().numpy().T)  # one noise per dimension, not one shared
    assert np.abs(correlations - np.eye(3)).max() < 0.05
    assert torch.equal(agent.sample(obs, greedy=True)[0], mean)
    action = agent.act(np.zeros(2, np.float32))
    assert isinstance(action, np.ndarray) and action.shape == (3,)


def test_exact_kl_of_the_bandit_is_torchs_kl_to_its_law():
    """QuadraticBandit's exact_trajectory_kl is KL(pi || N(mu, T/A)) as torch computes it, at an
    untrained agent (far from the law), in 1 and 3 dims and at two temperatures; the law is
    written here from the bandit's own mu and A, not read from its exact_law."""
    for dim, temperature in itertools.product((1, 3), (0.1, 1.0)):
        env = bandit_env.QuadraticBandit(**BANDITS[dim])
        agent = pa.Agent(1, env.action_space, hidden=16, with_value=False, obs_norm=False, seed=dim)
        with torch.no_grad():
            mean, log_std = (
                x[0].double() for x in agent.head.gaussian(agent.policy_outputs(torch.ones(1, 1)))
            )
        law_mean = torch.tensor(BANDITS[dim]["mean"], dtype=torch.float64)
        law_var = temperature / torch.tensor(BANDITS[dim]["curvature"], dtype=torch.float64)
        assert np.allclose(env.exact_law(temperature), (law_mean, law_var), rtol=1e-12, atol=0)
        law = torch.distributions.Normal(law_mean, law_var.sqrt())
        expected = torch.distributions.kl_divergence(
            torch.distributions.Normal(mean, log_std.exp()), law
        )
        kl = env.exact_trajectory_kl(agent, temperature)
        assert kl == pytest.approx(expected.sum().item(), rel=1e-6) and kl > 0.01


class RecordActions(gym.Wrapper):
    def step(self, action):
        self.unwrapped.seen = [*getattr(self.unwrapped, "seen", []), np.asarray(action)]
        return super().step(action)


def test_the_env_receives_the_squashed_action_inside_its_box():
    """On Pendulum-v1 (torque in [-2, 2]) every action the env is given is env_action(u) of the u
    the batch stores, and inside the box: the squash happens, once, on the way to the env."""
    cfg = config("Pendulum-v1", "grouped")
    envs = [RecordActions(pa.make_env(cfg)) for _ in range(2)]
    agent = pa.make_agent(cfg, envs[0], with_value=False)
    with torch.no_grad():  # a wide policy, so that many u fall beyond the bounds' atanh
        agent.policy[-1].bias[1:] = 3.0
    batch = pa.sample_episodes(envs, agent, [7], group_size=2, generator=torch.Generator())
    for k, env in enumerate(envs):
        seen = np.array(env.unwrapped.seen)  # (steps, 1)
        stored = batch.actions[0, k][batch.mask[0, k]].numpy()
        assert np.allclose(seen, agent.head.env_action(stored), atol=1e-6)
        assert (np.abs(seen) <= 2).all() and (np.abs(stored) > 2).any()


# half-ranges 2 and 0.75: their logs do not cancel in the sum over dims, as 2 and 0.5 would
BOX = gym.spaces.Box(np.array([-2, 0], "f4"), np.array([2, 1.5], "f4"))


def test_tanh_squash_is_the_change_of_variables_and_stays_in_the_box():
    """On a bounded Box, log pi(a) is the density of a = centre + half_range * tanh(u): torch's
    TransformedDistribution agrees; the env's action stays inside the box even for |u| = 30,
    where log pi stays finite."""
    agent = pa.Agent(3, BOX, hidden=16, with_value=False, obs_norm=False, seed=2)
    obs = torch.randn(500, 3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        u, log_probs, _ = agent.sample(obs, torch.Generator().manual_seed(5))
        mean, log_std = agent.head.gaussian(agent.policy_outputs(obs))
    centre, half_range = torch.tensor([0.0, 0.75]), torch.tensor([2.0, 0.75])
    squashed = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()),
        [
            torch.distributions.TanhTransform(),
            torch.distributions.AffineTransform(centre, half_range),
        ],
    )
    actions = torch.as_tensor(agent.head.env_action(u.numpy()), dtype=torch.float32)
    assert torch.allclose(log_probs, squashed.log_prob(actions).sum(-1), atol=1e-3)
    far = torch.tensor([[30.0, -30.0]])
    assert BOX.contains(agent.head.env_action(far.numpy()[0]).astype(np.float32))
    assert torch.isfinite(agent.log_prob_and_entropy(obs[:1], far)[0]).all()


def test_the_greedy_action_is_the_squashed_mean_inside_the_box():
    """Greedy on a bounded Box: centre + half_range * tanh(mean), not the raw mean."""
    agent = pa.Agent(3, BOX, hidden=16, with_value=False, obs_norm=False, seed=2)
    with torch.no_grad():
        agent.policy[-1].weight.zero_()
        agent.policy[-1].bias[:2] = torch.tensor([3.0, -1.0])
    action = agent.act(np.zeros(3, np.float32), greedy=True)
    expected = np.array([0.0, 0.75]) + np.array([2.0, 0.75]) * np.tanh([3.0, -1.0])
    assert np.allclose(action, expected, atol=1e-6) and BOX.contains(action.astype(np.float32))


def test_a_flat_or_mismatched_bandit_is_refused():
    for bad in (dict(curvature=[0.0]), dict(curvature=[-1.0]), dict(mean=[0, 1], curvature=[1])):
        with pytest.raises(TypeError, match="each curvature > 0"):
            bandit_env.QuadraticBandit(**bad)


def test_tanh_squashed_density_integrates_to_one_over_the_box():
    """exp(log N(u) - log |da/du|) over a grid of a in (low, high), u = atanh((a - c) / h): 1."""
    half_range, centre = torch.tensor([0.5], dtype=F64), 0.5
    actions = torch.linspace(0, 1, 200_001, dtype=F64)[1:-1, None]
    u = torch.atanh((actions - centre) / half_range)
    mean, log_std = torch.tensor([0.7], dtype=F64), torch.tensor([0.3], dtype=F64)
    log_pi = pa.gaussian_log_density(u, mean, log_std) - pa.tanh_log_jacobian(u, half_range)
    assert torch.trapezoid(log_pi.exp(), actions[:, 0]).item() == pytest.approx(1, abs=1e-4)


def test_a_squashed_policys_entropy_is_the_actions_differential_entropy_on_the_box():
    """H(a) = H(u) + E log |da/du|: the head's estimate, averaged over samples of u, and
    -E log pi(a) both equal -integral p log p over the box (H(u) alone is 1.72 here; with the
    Jacobian at the mean, greedy's, 0.57)."""
    head = pa.GaussianHead(gym.spaces.Box(0.0, 1.0, (1,)))
    mean, log_std = torch.tensor([0.7], dtype=F64), torch.tensor([0.3], dtype=F64)
    actions = torch.linspace(0, 1, 200_001, dtype=F64)[1:-1, None]
    u_grid = torch.atanh((actions - 0.5) / 0.5)
    log_pi = head.density(mean, log_std, u_grid)[0]
    exact = -torch.trapezoid(log_pi.exp() * log_pi, actions[:, 0]).item()
    noise = torch.randn(400_000, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    log_probs, entropies = head.density(mean, log_std, mean + log_std.exp() * noise)
    assert exact < 0.5  # far from H(u) = 1.72: the test tells the two apart
    assert entropies.mean().item() == pytest.approx(exact, abs=0.01)
    assert -log_probs.mean().item() == pytest.approx(exact, abs=0.01)


def test_a_squashed_policys_entropy_gradient_is_the_exact_entropys():
    """d H(a) / d(mean, log sigma) from the head's sampled estimate equals the gradient of the
    exact integral (--entropy-bonus on a Box follows it): u fixed instead of reparameterised
    gives the same value and a wrong gradient (none to the mean, 1 to log sigma)."""
    head = pa.GaussianHead(gym.spaces.Box(0.0, 1.0, (1,)))
    mean = torch.tensor([0.7], dtype=F64, requires_grad=True)
    log_std = torch.tensor([0.3], dtype=F64, requires_grad=True)
    actions = torch.linspace(0, 1, 200_001, dtype=F64)[1:-1, None]
    log_pi = head.density(mean, log_std, torch.atanh((actions - 0.5) / 0.5))[0]
    exact = -torch.trapezoid(log_pi.exp() * log_pi, actions[:, 0])
    wanted = torch.cat(torch.autograd.grad(exact, (mean, log_std)))
    noise = torch.randn(400_000, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    u = (mean + log_std.exp() * noise).detach()  # as the sampler stores it
    estimate = head.density(mean, log_std, u)[1].mean()
    got = torch.cat(torch.autograd.grad(estimate, (mean, log_std)))
    assert wanted.abs().min() > 0.5  # both partials far from 0 and from 1: the test tells
    assert torch.allclose(got, wanted, atol=0.02)  # the estimate's gradient from u's


# ---- every loss vanishes at the exact law, and only there ----------------------------------------


def law_batch(dim, temperature, mean_shift=0.0, std_factor=1.0, groups=32, size=16):
    """Actions from the law N(mu, T A^-1) (any actions would do: the law's V' is the same constant
    for every action), their rewards, and log pi under the law moved by mean_shift (every dim)
    and std_factor.  -> rewards, log_probs, mask: (groups, size, 1); log Z."""
    bandit = BANDITS[dim]
    mu, curvature = (
        torch.tensor(bandit["mean"], dtype=F64),
        torch.tensor(bandit["curvature"], dtype=F64),
    )
    log_std = 0.5 * torch.log(temperature / curvature)
    noise = torch.randn(groups, size, dim, generator=torch.Generator().manual_seed(dim), dtype=F64)
    actions = mu + log_std.exp() * noise
    rewards = -0.5 * (curvature * (actions - mu).square()).sum(-1)
    log_probs = pa.gaussian_log_density(actions, mu + mean_shift, log_std + math.log(std_factor))
    log_partition = 0.5 * torch.log(2 * math.pi * temperature / curvature).sum()
    mask = torch.ones(groups, size, 1, dtype=torch.bool)
    return rewards[..., None], log_probs[..., None], mask, float(log_partition)


PERTURBED = [dict(mean_shift=0.05), dict(std_factor=1.05), dict(std_factor=0.95)]


def spread_of_value(dim, temperature, mean_shift=0.0, std_factor=1.0):
    """Var(V'/T) over actions from the law, when log pi is the law's moved: a mean shift d in
    every dim gives sum_i d^2 / sigma_i^2 = d^2 sum_i A_i / T; a sigma factor s gives
    dim (1 - 1/s^2)^2 / 2 (z^2 / 2 has variance 1/2)."""
    if mean_shift:
        return mean_shift**2 * sum(BANDITS[dim]["curvature"]) / temperature
    return dim * (1 - 1 / std_factor**2) ** 2 / 2


@pytest.mark.parametrize("dim", [1, 3])
@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_every_loss_vanishes_at_the_gaussian_law_and_not_when_perturbed(dim, temperature):
    """grouped_loss, value_loss (V = T log Z, and for a perturbed policy the best constant V) and
    the ERR advantages (GAE with the exact V, and the group baseline) are 0 to float64 precision
    at N(mu, T A^-1).  After moving its mean by 0.05 or sigma by 5 % each is the size the
    perturbation predicts (spread_of_value), within sampling error on 512 actions."""
    rewards, log_probs, mask, log_z = law_batch(dim, temperature)
    terminated = torch.ones(mask.shape[:2], dtype=torch.bool)
    exact_values = torch.full((*mask.shape[:2], 2), temperature * log_z, dtype=F64)

    def losses(rewards, log_probs, values):
        advantages, _ = pa.soft_advantages(rewards, log_probs, values, mask, terminated,
                                           temperature, 1.0, 0.95)  # fmt: skip
        return [
            pa.grouped_loss(rewards, log_probs, mask, temperature),
            pa.value_loss(rewards, log_probs, values, mask, terminated, temperature, 1.0),
            advantages.square().mean(),
            pa.group_advantages(rewards, log_probs, mask, temperature).square().mean(),
        ]

    for loss in losses(rewards, log_probs, exact_values):
        assert loss.item() < 1e-20
    size = mask.shape[1]
    for perturbation in PERTURBED:
        rewards, log_probs, mask, _ = law_batch(dim, temperature, **perturbation)
        soft_value = pa.trajectory_value(rewards, log_probs, mask, temperature)
        best_values = torch.full_like(exact_values, soft_value.mean().item())  # V's best constant
        grouped, value, advantage, group_advantage = losses(rewards, log_probs, best_values)
        spread = spread_of_value(dim, temperature, **perturbation)  # of V'/T; V' = T (V'/T)
        within_group = spread * (size - 1) / size  # a group's mean is one of its own
        assert 0.7 < grouped / within_group < 1.4, (perturbation, grouped, within_group)
        assert 0.7 < value / (temperature**2 * spread) < 1.4, (perturbation, value, spread)
        ratio = group_advantage / (temperature**2 * within_group)
        assert 0.7 < ratio < 1.4, (perturbation, ratio)
        assert advantage / (temperature**2 * spread) > 0.7, perturbation  # plus V's offset


# ---- training reaches the law from a random start ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "algo, flags", [("grouped", {}), ("value", {}), ("err", {}), ("err", {"baseline": "value"})]
)
@pytest.mark.exact
@pytest.mark.parametrize("dim", [1, 3])
def test_training_reaches_the_gaussian_law(tmp_path, algo, flags, dim):
    """The real loop (sampler, update, Gaussian networks) on QuadraticBandit-v0's defaults, at two
    temperatures: the policy's mean is within 0.05 of mu, each variance within 5 % of T / A_i,
    and the exact KL to N(mu, T A^-1) is under 0.01.  The start is the network's init: mean ~0,
    sigma ~1.  err runs with its group baseline and, at T = 0.1, with the learned soft value (the
    default on the real envs)."""
    for temperature in (0.1, 1.0) if not flags else (0.1,):  # err's value baseline: one T
        cfg = config("QuadraticBandit-v0", algo, temp_start=temperature, temp_end=temperature,
                     env_kwargs=BANDITS[dim], eval_every=1000, **flags)  # fmt: skip
        agent, experiment = pa.train(cfg, tmp_path / f"T{temperature}")
        with torch.no_grad():
            mean, log_std = agent.head.gaussian(agent.policy_outputs(torch.ones(1, 1)))
        law_mean, law_var = pa.make_env(cfg).unwrapped.exact_law(temperature)
        variance = np.exp(2 * log_std[0].double().numpy())
        assert np.abs(mean[0].double().numpy() - law_mean).max() < 0.05, (temperature, mean)
        assert np.abs(variance / law_var - 1).max() < 0.05, (temperature, variance, law_var)
        assert experiment["summary"]["exact_kl"] < 0.01, (temperature, experiment["summary"])


# ---- the continuous envs from the plain command --------------------------------------------------


CONTINUOUS_ENVS = ["Pendulum-v1", "MountainCarContinuous-v0", "LunarLanderContinuous-v3"]


@pytest.mark.slow
@pytest.mark.parametrize("env_id", CONTINUOUS_ENVS)
@pytest.mark.parametrize("algo", ["grouped", "value", "err"])
def test_each_algorithm_runs_on_the_continuous_envs(tmp_path, env_id, algo):
    """One short iteration of each env's defaults: Box actions are sampled, squashed into the
    bounds by the agent (tanh), trained on, checkpointed and loaded back; Pendulum-v1 gets its
    -200 threshold."""
    cfg = config(env_id, algo, iterations=1, num_groups=2, group_size=2, optim_steps=1,
                 max_env_steps=0, max_minutes=0)  # fmt: skip
    experiment = train(cfg, tmp_path / "run")
    assert experiment["summary"]["env_steps"] > 0
    if env_id == "Pendulum-v1":
        assert experiment["summary"]["reward_threshold"] == -200.0
    agent, _ = pa.load(tmp_path / "run" / "checkpoint.pt")
    action = agent.act(pa.make_env(cfg).reset(seed=0)[0], greedy=True)
    assert action.shape == pa.make_env(cfg).action_space.shape


def test_continuous_defaults_are_valid_configs():
    for env_id in ("QuadraticBandit-v0", "Pendulum-v1", "MountainCarContinuous-v0",
                   "LunarLanderContinuous-v3"):  # fmt: skip
        for algo in ("grouped", "value", "err"):
            annealing_config.check_config(
                annealing_config.Config(**annealing_config.defaults_for(env_id, algo))
            )


@pytest.mark.slow
def test_validate_prints_the_exact_kl_of_a_gaussian_checkpoint(tmp_path, capsys):
    """--validate on a QuadraticBandit-v0 checkpoint: the greedy return (the mean's), and the
    exact KL at the run's T, equal to the one the run recorded last."""
    cfg = config("QuadraticBandit-v0", "grouped", iterations=3, env_kwargs=BANDITS[3])
    experiment = train(cfg, tmp_path / "run")
    capsys.readouterr()
    assert pa.main(["--validate", "--load-model", str(tmp_path / "run" / "checkpoint.pt")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert "greedy return" in printed[0] and "exact KL" in printed[1], printed
    assert f"{experiment['history'][-1]['exact_kl']:.2e}" in printed[1]
