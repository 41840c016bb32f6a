"""Continuous actions: the Gaussian policy's math, every loss at the exact law of the quadratic
bandit (bandit_env.py, whose Boltzmann law is N(mu, T A^-1)), the three algorithms reaching that
law from a random start, and the continuous gymnasium envs from the plain command."""

import math

import numpy as np
import pytest
import torch

import annealing_config
import policy_annealing as pa
from testing_helpers import config, train

F64 = torch.float64
# Two bandits: 1 and 3 action dims, A diagonal with curvatures that differ by 16x in 3 dims.
BANDITS = {
    1: dict(mean=[0.5], curvature=[2.0]),
    3: dict(mean=[0.5, -1.0, 2.0], curvature=[1.0, 4.0, 0.25]),
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


def test_gaussian_agent_samples_log_probs_and_greedy_means():
    """sample's log pi and entropies agree with log_prob_and_entropy; greedy is the mean; the
    sample's spread is sigma; act returns an array of the Box's shape."""
    agent = pa.Agent(obs_dim=2, num_actions=3, hidden=16, with_value=False, obs_norm=False,
                     seed=1, continuous=True)  # fmt: skip
    obs = torch.randn(4000, 2, generator=torch.Generator().manual_seed(2))
    generator = torch.Generator().manual_seed(3)
    actions, log_probs, entropies = agent.sample(obs, generator)
    again = agent.log_prob_and_entropy(obs, actions)
    assert torch.allclose(log_probs, again[0]) and torch.allclose(entropies, again[1])
    mean, log_std = agent.gaussian(obs)
    z = (actions - mean) / log_std.exp()
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    assert torch.equal(agent.sample(obs, greedy=True)[0], mean)
    action = agent.act(np.zeros(2, np.float32))
    assert isinstance(action, np.ndarray) and action.shape == (3,)


# ---- every loss vanishes at the exact law, and only there ----------------------------------------


def law_batch(dim, temperature, mean_shift=0.0, std_factor=1.0, groups=4, size=8):
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


@pytest.mark.parametrize("dim", [1, 3])
@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_every_loss_vanishes_at_the_gaussian_law_and_not_when_perturbed(dim, temperature):
    """grouped_loss, value_loss (V = T log Z, and for a perturbed policy even the best constant
    V) and the ERR advantages (GAE with the exact V, and the group baseline) are 0 to float64
    precision at N(mu, T A^-1) and clearly not after moving its mean by 0.05 or sigma by 5 %."""
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
    for perturbation in PERTURBED:
        rewards, log_probs, mask, _ = law_batch(dim, temperature, **perturbation)
        soft_value = pa.trajectory_value(rewards, log_probs, mask, temperature)
        best_values = torch.full_like(exact_values, soft_value.mean().item())  # V's best constant
        grouped, value, advantage, group_advantage = losses(rewards, log_probs, best_values)
        scale = temperature**2  # V' is T times log-densities
        assert grouped > 1e-5 and value > 1e-5 * scale, perturbation
        assert advantage > 1e-5 * scale and group_advantage > 1e-5 * scale, perturbation


# ---- training reaches the law from a random start ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grouped", "value", "err"])
@pytest.mark.parametrize("dim", [1, 3])
def test_training_reaches_the_gaussian_law(tmp_path, algo, dim):
    """The real loop (sampler, update, Gaussian networks) on QuadraticBandit-v0's defaults, at two
    temperatures: the policy's mean is within 0.05 of mu, each variance within 5 % of T / A_i,
    and the exact KL to N(mu, T A^-1) is under 0.01.  The start is the network's init: mean ~0,
    sigma ~0.9."""
    for temperature in (0.1, 1.0):
        cfg = config("QuadraticBandit-v0", algo, temp_start=temperature, temp_end=temperature,
                     env_kwargs=BANDITS[dim], eval_every=1000)  # fmt: skip
        agent, experiment = pa.train(cfg, tmp_path / f"T{temperature}")
        with torch.no_grad():
            mean, log_std = agent.gaussian(torch.ones(1, 1))
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
    """One short iteration of each env's defaults: Box actions are sampled, clipped inside the env,
    trained on, checkpointed and loaded back; Pendulum-v1 gets its -200 threshold."""
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
