"""Policy Annealing: a thermodynamics-inspired family of RL algorithms, in one file.

A policy is *annealed* at temperature T when every trajectory tau that starts from the same state
has probability p(tau) proportional to exp(R(tau) / T).  With p(tau) = prod_t p_t and
R(tau) = sum_t R_t, taking logs shows that the *trajectory value*

    V' = sum_t (R_t - T * log p_t)                                           -> trajectory_value

is then one constant, T log Z with Z = sum_tau exp(R(tau)/T), for every trajectory from that
state.  With densities in place of probabilities (Z an integral) all of it holds for continuous
actions (a Gaussian policy, see Agent).  Three ways to enforce it:

  grouped  episodes reset with one seed share V'; minimise its spread         -> grouped_loss
  value    learn V(s) and enforce the discounted, bootstrapped per-step form  -> value_loss
  err      feed R' = R - T log p to an ordinary (PPO) policy gradient          -> err_rewards

Sections: 1 Boltzmann math, 2 losses, 3 the policy and the sampler, 4 updates, 5 training loop,
6 API and CLI.  Beside it: annealing_config.py (options, defaults, schedules, parser), run_io.py
(envs, the run's files, bookkeeping, signals); tree_env, bandit_env, gridworld_env (exact checks).
Tensors are laid out (num_groups, group_size, steps, ...); batch = num_groups * group_size.
`mask` is True on real steps; steps past an episode's end are padding (zeros), which no loss reads.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import Generator, Tensor, nn
from torch.optim import Optimizer

import annealing_config
import run_io
from annealing_config import Config, check_config, config_of

gym.register("Tree-v0", entry_point="tree_env:TreeEnv")  # imported only when made
gym.register("QuadraticBandit-v0", entry_point="bandit_env:QuadraticBandit")
gym.register("GridWorld-v0", entry_point="gridworld_env:GridWorld")


# ==== 1. Boltzmann math ===========================================================================
def boltzmann_log_probs(returns: Tensor, temperature: float) -> Tensor:
    """The target law p ∝ exp(R/T) over the last dim, as log-probabilities."""
    # (..., n) -> (..., n); log_softmax subtracts the max first, so it is finite for any T > 0.
    return torch.log_softmax(returns / temperature, dim=-1)


def err_rewards(rewards: Tensor, log_probs: Tensor, temperature: float) -> Tensor:
    """Entropy-regularized reward R' = R - T log p; summed over a trajectory it is V'."""
    # (..., steps) -> (..., steps). T = 0 gives back R exactly: plain policy gradient.
    return rewards - temperature * log_probs


def dual_temperature_step(temperature: float, entropy: float, target: float, step: float,
                          max_change: float, floor: float, ceiling: float) -> float:  # fmt: skip
    """log T <- log T + step * (target - H), SAC's automatic entropy tuning with T for alpha: T
    rises while the policy is less random than the target (nats a step), falls while it is more,
    and stops where the law at T has that entropy.  The change of log T is capped at max_change a
    batch (an on-policy learner's entropy lags T by many batches) and T kept in [floor, ceiling]
    (at T -> 0 nothing resists collapse; at T -> inf the law is uniform)."""
    change = min(max(step * (target - entropy), -max_change), max_change)
    return min(max(temperature * math.exp(change), floor), ceiling)


def policy_entropy(log_pi: Tensor) -> Tensor:
    """H(pi) = -sum_a pi(a) log pi(a) over the last dim. (..., num_actions) -> (...)."""
    return -(log_pi.exp() * log_pi).sum(-1)


def gaussian_log_density(actions: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """log pi(a|s) of a diagonal Gaussian, summed over action dims.  With densities in place of
    probabilities, V' and every loss are unchanged.  (..., action_dim) each -> (...)."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_entropy(log_std: Tensor) -> Tensor:
    """H = sum_i (log sigma_i + (1 + log 2 pi) / 2), may be < 0 (differential). (..., d) -> (...)"""
    return (log_std + 0.5 * (1 + math.log(2 * math.pi))).sum(-1)


def tanh_log_jacobian(raw_actions: Tensor, half_range: Tensor) -> Tensor:
    """log |da/du| of a = centre + half_range * tanh(u), summed over action dims, by
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)): finite for any u.  (..., dim) -> (...)."""
    u = raw_actions
    return (half_range.log() + 2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)


def masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    # (..., steps) -> (...). `where` before the sum: padding adds 0 to the value and its gradient;
    # what computed `values` must keep it finite (0 * nan = nan backward): the sampler pads with 0.
    return torch.where(mask, values, 0).sum(-1)


def trajectory_value(rewards: Tensor, log_probs: Tensor, mask: Tensor,
                     temperature: float) -> Tensor:  # fmt: skip
    """V' = sum_t (R_t - T log p_t) over real steps. (..., steps) -> (...)."""
    return masked_sum(err_rewards(rewards, torch.where(mask, log_probs, 0), temperature), mask)


def discounted_sum_ahead(values: Tensor, mask: Tensor, discount: float, horizon: int = 0) -> Tensor:
    """out_t = sum_{0<=i<horizon} discount^i x_{t+i} over real steps (horizon 0: to the end).
    (..., steps) -> (..., steps)."""
    # A (steps, steps) band matrix of discount^(j-t), 0 <= j-t < horizon, instead of a reverse
    # Python loop, or of the gamma^-t cumsum trick, which overflows for long episodes.
    steps = values.shape[-1]
    offset = torch.arange(steps, device=values.device)
    power = (offset[None, :] - offset[:, None]).to(values.dtype)  # [t, j] = j - t
    band = (power >= 0) & (power < (horizon or steps))
    weights = torch.where(band, discount ** power.clamp(min=0), 0)
    return torch.where(mask, values, 0) @ weights.T


# ==== 2. Losses ===================================================================================
# Padding counts as nothing.  The original implementation filled steps after termination with
# log(1/|A|); that adds T log|A| per missing step to a shorter episode's V', a bias toward ending
# early that has nothing to do with the rewards.  Here a padded step adds 0 to every sum.
def grouped_loss(rewards: Tensor, log_probs: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """Mean squared within-group deviation of sum_t log p_t - sum_t R_t / T (= -V'/T).
    rewards, log_probs, mask: (num_groups, group_size, steps) -> scalar >= 0.  In log-probability
    units, so its scale does not depend on the reward scale; zero exactly when p ∝ exp(R/T) inside
    every group.  Its gradient is REINFORCE on the ERR return with a group-mean baseline."""
    # -V'/T computed directly: T * (...) / T would lose precision at small T.
    minus_value = masked_sum(log_probs, mask) - masked_sum(rewards, mask) / temperature  # (G, K)
    deviation = minus_value - minus_value.mean(dim=1, keepdim=True)
    return deviation.square().mean()


def trust_region_targets(log_prob_sums: Tensor, reward_sums: Tensor, lengths: Tensor,
                         temperature: float, clip_eps: float) -> Tensor:  # fmt: skip
    """Targets for sum_t log p of each trajectory: the current log-probs moved toward R/T, the
    group's step shrunk so that no member's centred log-prob moves more than clip_eps nats per
    step of its episode (clip_eps * length).  (G, K) each -> (G, K).

    Only differences within a group carry meaning (the group constant is log Z), so the step
    (wanted - centred) is centred and so is trust_region_loss.  The whole step is scaled, not each
    member clamped: clamping (150, -50, -50, -50) at 2 gives (2, -2, -2, -2), whose centred fit
    moves the first member by 3.  Per step, not per trajectory (the original's): a cap of 2 nats
    lets a 400-step episode change by 0.005 nats a step, too little to ever sharpen the policy,
    while no cap lets 50 full-batch steps fit R/T gaps of 100s of nats on 8 episodes at once,
    which makes the policy deterministic, and a group of identical episodes has zero loss."""
    centred = log_prob_sums - log_prob_sums.mean(dim=1, keepdim=True)
    wanted = reward_sums / temperature - (reward_sums / temperature).mean(dim=1, keepdim=True)
    step = wanted - centred  # (G, K), sums to 0 over each group
    budget = clip_eps * lengths.to(step.dtype)  # nats each member may move
    shrink = (budget / step.abs()).amin(dim=1, keepdim=True).clamp(max=1)
    return (log_prob_sums + step * shrink).detach()


def trust_region_loss(log_prob_sums: Tensor, targets: Tensor) -> Tensor:
    """Mean squared within-group deviation of (sum_t log p - target).  (G, K) -> scalar.
    Unclipped, it is grouped_loss exactly at every point, not only at the first step: then
    sum log p - target = sum log p - R/T + (group constants), and centring removes the constants."""
    residual = log_prob_sums - targets
    return (residual - residual.mean(dim=1, keepdim=True)).square().mean()


def value_loss(rewards: Tensor, log_probs: Tensor, values: Tensor, mask: Tensor, terminated: Tensor,
               temperature: float, gamma: float, path_length: int = 0,
               centred: bool = False) -> Tensor:  # fmt: skip
    """Path consistency over paths of d = path_length steps (Nachum et al. 2017):
    V(s_t) = sum_{i<m} gamma^i (R_{t+i} - T log p_{t+i}) + gamma^m V(s_{t+m}), m = min(d, steps
    left); d = 0 is the whole rest of the episode, d = 1 the one-step form
    T log p_t = R_t + gamma V(s_{t+1}) - V(s_t).

    rewards, log_probs, mask: (..., steps); values: (..., steps + 1), V(s_t) at each step and, at
    index = length, the state after the last real step; terminated: (...).  V(s_{t+m}) is 0 when
    t + m is the end of a terminated episode, the network's value otherwise (a bootstrap after
    truncation).  Mean squared residual over real steps; gradients reach both log-probs and
    values.  Zero at the soft-optimal pair (V*, pi*) of a deterministic MDP for every d: there
    R - T log pi* = V*(s) - gamma V*(s'), which telescopes.  centred: the log-probs' gradient
    follows each residual minus the mean residual over the batch's real steps (the loss's value
    and its gradient in `values` are unchanged), so a residual shared by every step, such as V
    sitting above all the soft returns, does not push every taken log p down."""
    steps = rewards.shape[-1]
    lengths, t = mask.sum(-1, keepdim=True), torch.arange(steps)
    # index of s_{t+m}, m = end - t: (..., steps), or for d = 0 the episode's end, (..., 1)
    end = torch.minimum(t + path_length, lengths) if path_length else lengths
    soft_rewards = err_rewards(rewards, torch.where(mask, log_probs, 0), temperature)
    soft_return = discounted_sum_ahead(soft_rewards, mask, gamma, path_length)
    end_value = torch.where((end == lengths) & terminated[..., None], 0, values.gather(-1, end))
    target = soft_return + gamma ** (end - t).clamp(min=0).to(values.dtype) * end_value
    residual = torch.where(mask, values[..., :steps] - target, 0)  # masked before squaring
    count = mask.sum().clamp(min=1)
    # log p reaches r = V - S - bootstrap only through S = soft_return: adding 2 mean(r) sum_t S_t
    # (value cancelled) turns log p's gradient sum_t 2 r_t dr_t into sum_t 2 (r_t - mean r) dr_t.
    if centred:
        moved = torch.where(mask, soft_return - soft_return.detach(), 0).sum() / count
        return (residual.square().sum() + 2 * residual.detach().sum() * moved) / count
    return residual.square().sum() / count


def soft_advantages(rewards: Tensor, behaviour_log_probs: Tensor, values: Tensor, mask: Tensor,
                    terminated: Tensor, temperature: float, gamma: float,
                    gae_lambda: float) -> tuple[Tensor, Tensor]:  # fmt: skip
    """GAE on the ERR rewards: the advantage and the soft return for PPO (--algo err).
    rewards, behaviour_log_probs, mask: (..., steps); values: (..., steps + 1)
    -> advantages, soft returns: (..., steps) each."""
    steps = rewards.shape[-1]
    is_last = torch.arange(steps) == (mask.sum(-1, keepdim=True) - 1)
    next_values = torch.where(is_last & terminated[..., None], 0, values[..., 1:])
    soft_reward = err_rewards(rewards, torch.where(mask, behaviour_log_probs, 0), temperature)
    delta = soft_reward + gamma * next_values - values[..., :steps]
    advantages = discounted_sum_ahead(delta, mask, gamma * gae_lambda)
    return advantages, advantages + values[..., :steps]


def group_advantages(rewards: Tensor, behaviour_log_probs: Tensor, mask: Tensor,
                     temperature: float) -> Tensor:  # fmt: skip
    """V' - group mean of V', the same for every step of a trajectory (GRPO-style baseline).
    (num_groups, group_size, steps) -> (num_groups, group_size, steps).  Exactly 0 when
    log p = R/T + c: then V' = -T c for the whole group."""
    value = trajectory_value(rewards, behaviour_log_probs, mask, temperature)
    return (value - value.mean(dim=1, keepdim=True))[..., None].expand(mask.shape)


def clipped_policy_loss(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor,
                        clip_eps: float) -> Tensor:  # fmt: skip
    """PPO's clipped surrogate, negated for minimisation. (n,) -> scalar."""
    ratio = (log_probs - old_log_probs).exp()
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps)
    return -torch.minimum(ratio * advantages, clipped * advantages).mean()


def approximate_kl(log_probs: Tensor, old_log_probs: Tensor) -> Tensor:
    """KL(behaviour || pi) on its samples by k3: E[r - 1 - log r], r = pi/behaviour; no grad (n,)"""
    log_ratio = (log_probs - old_log_probs).detach()
    return (log_ratio.exp() - 1 - log_ratio).mean()


# ==== 3. The policy: observation normaliser, action heads, agent; the seed-grouped sampler =======
def mlp(in_dim: int, out_dim: int, hidden: int, out_gain: float,
        generator: Generator) -> nn.Sequential:  # fmt: skip
    linears = [nn.Linear(in_dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, out_dim)]
    for layer, gain in zip(linears, [math.sqrt(2), math.sqrt(2), out_gain], strict=True):
        nn.init.orthogonal_(layer.weight, gain, generator=generator)
        nn.init.zeros_(layer.bias)
    return nn.Sequential(linears[0], nn.Tanh(), linears[1], nn.Tanh(), linears[2])


class RunningNormalizer(nn.Module):
    """Observations scaled by running mean and variance (Chan et al.'s parallel update), not by
    the space's bounds (CartPole's are infinite, LunarLander's loose), in front of both networks.
    Updated from training batches after each update: sampling and the update see one policy."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))

    def forward(self, obs: Tensor) -> Tensor:
        return ((obs - self.mean) / (self.var + 1e-8).sqrt()).clamp(-10, 10).to(obs.dtype)

    def update(self, obs: Tensor) -> None:  # obs: (n, dim)
        n, mean, var = obs.shape[0], obs.double().mean(0), obs.double().var(0, unbiased=False)
        total, delta = self.count + n, mean - self.mean
        pooled = self.var * self.count + var * n + delta.square() * self.count * n / total
        self.var.copy_(pooled / total)
        self.mean.add_(delta * n / total)
        self.count.copy_(total)


# An action head: the policy network's outputs as a distribution over one action space (draw, log pi
# and entropy, the env's action); a new action space is one more head.  out: (..., num_outputs).
class CategoricalHead:
    """Discrete actions: a softmax over the outputs (logits)."""

    action_dtype = torch.long

    def __init__(self, space: gym.spaces.Discrete):
        self.num_outputs = int(space.n)

    def log_probs(self, out: Tensor) -> Tensor:  # -> (..., num_actions)
        return torch.log_softmax(out, dim=-1)

    def log_prob_and_entropy(self, out: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        log_pi = self.log_probs(out)
        return log_pi.gather(-1, actions[..., None]).squeeze(-1), policy_entropy(log_pi)

    def draw(self, out: Tensor, generator: Generator | None, greedy: bool) -> Tensor:
        log_pi = self.log_probs(out)  # greedy: the most likely action
        drawn = None if greedy else torch.multinomial(log_pi.exp(), 1, generator=generator)
        return log_pi.argmax(-1) if greedy else drawn.squeeze(-1)

    def env_action(self, action) -> int:
        return int(action)


def bounded_log_std(raw: Tensor, low: float = -5.0, high: float = 2.0) -> Tensor:
    """raw -> log sigma in (low, high) by a sigmoid, sigma = 1 at raw = 0 (SAC's bounds).  Below:
    T = 0 does not resist collapse (-T log pi does), and (a - mean)/sigma and PPO's ratios blow up
    on stored actions; a law with sigma < e^-5 is out of reach.  Above: no step flattens pi."""
    return low + (high - low) * torch.sigmoid(raw + math.log(-low / high))


def raw_log_std(log_std: float, low: float = -5.0, high: float = 2.0) -> float:  # the inverse
    return math.log((log_std - low) / (high - log_std)) - math.log(-low / high)


class GaussianHead:
    """A flat Box: a diagonal Gaussian over u, the outputs its mean and raw log-std.  The batch
    stores u.  A bounded Box gets a = centre + half_range * tanh(u) and log pi(a) with the
    Jacobian, so that p(a) ∝ exp(R(a)/T) lives on the box (a clip would make the law improper:
    past a bound the reward is flat and -T log pi spreads mass there for free, docs/experiments.md).
    A Box without bounds gets u itself."""

    action_dtype = torch.float32

    def __init__(self, space: gym.spaces.Box):
        self.num_outputs, self.half_range = 2 * space.shape[0], None
        if np.isfinite(space.low).all():  # all bounds or none (run_io.make_env)
            low, high = space.low.astype(np.float64), space.high.astype(np.float64)
            self.centre, self.half_range = (high + low) / 2, torch.tensor((high - low) / 2).float()

    def gaussian(self, out: Tensor) -> tuple[Tensor, Tensor]:  # -> mean, log-std (..., dim)
        mean, raw = out.chunk(2, dim=-1)
        return mean, bounded_log_std(raw)

    def density(self, mean: Tensor, log_std: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """log pi(a|s) of the Gaussian sample u's action, and H(pi(.|s)): (..., dim) -> (...).
        Squashed: H(a) = H(u) + E log |da/du| at u reparameterised (mean + sigma * its noise, the
        behaviour policy's: later PPO epochs bias it a little), so its gradient reaches both."""
        log_prob, entropy = gaussian_log_density(u, mean, log_std), gaussian_entropy(log_std)
        if self.half_range is None:
            return log_prob, entropy
        same_u = mean + log_std.exp() * ((u - mean) * torch.exp(-log_std)).detach()
        jacobian, same_jacobian = (tanh_log_jacobian(x, self.half_range) for x in (u, same_u))
        return log_prob - jacobian, entropy + same_jacobian

    def log_prob_and_entropy(self, out: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        return self.density(*self.gaussian(out), actions)

    def draw(self, out: Tensor, generator: Generator | None, greedy: bool) -> Tensor:
        mean, log_std = self.gaussian(out)
        noise = 0 if greedy else torch.randn(mean.shape, generator=generator)
        return mean + log_std.exp() * noise  # greedy: the mean

    def env_action(self, action) -> np.ndarray:  # u, squashed into a bounded Box
        u = np.asarray(action)  # an ndarray, not the list sample_episodes holds
        return u if self.half_range is None else self.centre + self.half_range.numpy() * np.tanh(u)


class Agent(nn.Module):
    """The policy network and its action head; an optional value network and input normaliser."""

    def __init__(self, obs_dim: int, action_space: gym.Space, hidden: int, with_value: bool,
                 obs_norm: bool, seed: int = 0, initial_log_std: float = 0.0):  # fmt: skip
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        continuous = isinstance(action_space, gym.spaces.Box)  # a flat Box (run_io.make_env)
        self.head = (GaussianHead if continuous else CategoricalHead)(action_space)
        self.normalizer = RunningNormalizer(obs_dim) if obs_norm else nn.Identity()
        # gain 0.01: outputs ~ biases (softmax ~uniform; Gaussian mean ~0, sigma of --init-log-std)
        self.policy = mlp(obs_dim, self.head.num_outputs, hidden, 0.01, generator)
        if continuous:
            self.policy[-1].bias.data[self.head.num_outputs // 2 :] = raw_log_std(initial_log_std)
        self.value = mlp(obs_dim, 1, hidden, 1.0, generator) if with_value else None

    def policy_outputs(self, obs: Tensor) -> Tensor:  # (..., obs_dim) -> (..., num_outputs)
        return self.policy(self.normalizer(obs))

    def values(self, obs: Tensor) -> Tensor:  # (..., obs_dim) -> (...)
        return self.value(self.normalizer(obs)).squeeze(-1)

    def log_prob_and_entropy(self, obs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """log pi(a|s) of the actions taken, and H(pi(.|s)).  obs (..., obs_dim), actions (...)
        long or (..., action_dim) float (u, before any squash) -> (...), (...)."""
        return self.head.log_prob_and_entropy(self.policy_outputs(obs), actions)

    def sample(self, obs: Tensor, generator: Generator | None = None,
               greedy: bool = False) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        """Actions for (n, obs_dim) observations, sampled or greedy (the argmax, the mean), with
        their log pi and the entropies, as log_prob_and_entropy but from one forward pass."""
        outputs = self.policy_outputs(obs)
        actions = self.head.draw(outputs, generator, greedy)
        return actions, *self.head.log_prob_and_entropy(outputs, actions)

    @torch.inference_mode()
    def act(self, obs, greedy: bool = False, generator: Generator | None = None):
        """One env action for one observation (normalised as in training), sampled or greedy."""
        obs = torch.as_tensor(np.asarray(obs), dtype=torch.float32)[None]
        return self.head.env_action(self.sample(obs, generator, greedy)[0][0].numpy())


@dataclasses.dataclass
class Batch:
    observations: Tensor  # (G, K, steps + 1, obs_dim); index = length: obs after last step
    actions: Tensor  # (G, K, steps) long, or (G, K, steps, action_dim) float if continuous
    rewards: Tensor  # (G, K, steps)
    log_probs: Tensor  # (G, K, steps) log pi(a_t|s_t) of the policy that sampled them
    entropies: Tensor  # (G, K, steps) entropy of pi(.|s_t)
    mask: Tensor  # (G, K, steps) bool, True on real steps
    terminated: Tensor  # (G, K) bool; False = truncated, bootstrap from the last obs

    @property
    def returns(self) -> Tensor:  # (G, K)
        return masked_sum(self.rewards, self.mask)

    @property
    def mean_entropy(self) -> float:  # over real steps
        return float(masked_sum(self.entropies, self.mask).sum() / self.mask.sum())


def sample_episodes(envs: list[gym.Env], agent: Agent, seeds: np.ndarray | list[int],
                    group_size: int, generator: Generator | None,
                    greedy: bool = False) -> Batch:  # fmt: skip
    """Run len(envs) episodes to their end; env i resets with seeds[i * len(seeds) // len(envs)]:
    its group's seed if there is one per group, its own if one per episode (--no-seed-groups).
    Only running episodes are stepped: one batched policy forward per time step over them, and no
    env step after an episode ends, so the mask counts env steps exactly."""
    count = len(envs)
    seed_of = [int(seeds[i * len(seeds) // count]) for i in range(count)]
    observations = [[env.reset(seed=seed)[0]] for env, seed in zip(envs, seed_of, strict=True)]
    steps = [[] for _ in envs]  # per episode, per step: (action, reward, log_prob, entropy)
    terminated, ended, running = [False] * count, [False] * count, list(range(count))
    with torch.inference_mode():  # no autograd bookkeeping while stepping
        while running:
            obs = torch.as_tensor(np.stack([observations[i][-1] for i in running]))
            actions, taken, entropies = agent.sample(obs.float(), generator, greedy)
            stepped = zip(actions.tolist(), taken.tolist(), entropies.tolist(), strict=True)
            for i, (action, log_prob, entropy) in zip(running, stepped, strict=True):
                env_action = agent.head.env_action(action)
                next_obs, reward, terminated[i], truncated, _ = envs[i].step(env_action)
                observations[i].append(next_obs)
                steps[i].append((action, float(reward), log_prob, entropy))
                ended[i] = terminated[i] or truncated
            running = [i for i in running if not ended[i]]

    def padded(rows, dtype):  # one sequence per episode -> (G, K, longest, ...), 0 after its end
        tensors = [torch.as_tensor(np.array(row), dtype=dtype) for row in rows]
        stacked = nn.utils.rnn.pad_sequence(tensors, batch_first=True)
        return stacked.reshape(count // group_size, group_size, *stacked.shape[1:])

    per_step = zip(*[zip(*episode, strict=True) for episode in steps], strict=True)
    actions, rewards, log_probs, entropies = per_step  # steps[i] transposed: one list per field
    return Batch(
        observations=padded(observations, torch.float32),
        actions=padded(actions, agent.head.action_dtype),
        rewards=padded(rewards, torch.float32),
        log_probs=padded(log_probs, torch.float32),
        entropies=padded(entropies, torch.float32),
        mask=padded([[True] * len(episode) for episode in steps], torch.bool),
        terminated=torch.tensor(terminated).reshape(count // group_size, group_size),
    )


# ==== 4. Update steps, one per algorithm ==========================================================
def taken_log_probs(agent: Agent, batch: Batch) -> Tensor:
    """log pi(a_t|s_t) under the current policy. -> (G, K, steps)."""
    return agent.log_prob_and_entropy(batch.observations[..., :-1, :], batch.actions)[0]


def optimizer_step(optimizer: Optimizer, loss: Tensor, params: list, max_grad_norm: float) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss became {loss.item()}")
    optimizer.zero_grad(set_to_none=True)  # None, not 0: Adam skips a parameter with no grad
    loss.backward()
    if max_grad_norm:
        nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()


def update_grouped(agent: Agent, optim: Optimizer, batch: Batch, temperature: float, cfg: Config,
                   rng: Generator) -> float:  # fmt: skip
    """--optim-steps full-batch steps on grouped_loss or its trust-region form; the first loss."""
    params, rewards, mask = list(agent.parameters()), batch.rewards, batch.mask
    first_loss = targets = None
    if cfg.trust_region:  # targets fixed for the whole batch
        with torch.no_grad():
            sums, eps = masked_sum(taken_log_probs(agent, batch), mask), cfg.trust_region
            targets = trust_region_targets(sums, batch.returns, mask.sum(-1), temperature, eps)
    for _ in range(cfg.optim_steps):
        log_probs = taken_log_probs(agent, batch)
        if targets is None:
            loss = grouped_loss(rewards, log_probs, mask, temperature)
        else:
            loss = trust_region_loss(masked_sum(log_probs, mask), targets)
        first_loss = loss.item() if first_loss is None else first_loss
        optimizer_step(optim, loss, params, cfg.max_grad_norm)
    return first_loss


def update_value(agent: Agent, optim: Optimizer, batch: Batch, temperature: float, cfg: Config,
                 rng: Generator) -> float:  # fmt: skip
    """--optim-steps full-batch steps on value_loss.  V takes every step; the policy only the last
    --policy-steps of them (0: every step), so that V first absorbs the part of the residuals
    that is its own error, and the policy then moves by a few steps, not by a full fit."""
    params, first_loss = list(agent.parameters()), None
    v_alone = cfg.optim_steps - cfg.policy_steps if cfg.policy_steps else 0
    with torch.no_grad():  # the policy does not move while V is alone: its log-probs, once
        fixed_log_probs = taken_log_probs(agent, batch) if v_alone > 0 else None
    for step in range(cfg.optim_steps):
        # no gradient reaches the policy while V is alone: Adam skips it, its state untouched
        log_probs = fixed_log_probs if step < v_alone else taken_log_probs(agent, batch)
        values = agent.values(batch.observations)
        loss = value_loss(batch.rewards, log_probs, values, batch.mask, batch.terminated,
                          temperature, cfg.gamma, cfg.path_length,
                          centred=cfg.centre_residuals)  # fmt: skip
        first_loss = loss.item() if first_loss is None else first_loss
        optimizer_step(optim, loss, params, cfg.max_grad_norm)
    return first_loss


def update_err(agent: Agent, optim: Optimizer, batch: Batch, temperature: float, cfg: Config,
               rng: Generator) -> float:  # fmt: skip
    """PPO on the ERR rewards R - T log p_behaviour: --optim-steps epochs of --minibatches.
    T = 0 is plain PPO; --entropy-bonus adds the usual c * H(pi) to the objective."""
    params = list(agent.parameters())
    rewards, behaviour, mask = batch.rewards, batch.log_probs, batch.mask
    with torch.no_grad():
        if cfg.baseline == "group":
            advantages, soft_returns = group_advantages(rewards, behaviour, mask, temperature), None
        else:
            values, terminated = agent.values(batch.observations), batch.terminated
            advantages, soft_returns = soft_advantages(
                rewards, behaviour, values, mask, terminated, temperature, cfg.gamma, cfg.gae_lambda
            )
    obs, actions = batch.observations[..., :-1, :][mask], batch.actions[mask]
    old_log_probs, advantages = behaviour[mask], advantages[mask]
    soft_returns = soft_returns[mask] if soft_returns is not None else None
    # No division by the advantages' std, as PPO usually does: near the Boltzmann policy the ERR
    # advantages shrink to 0, and rescaling them to unit std would keep the policy moving forever.
    losses, stop_kl = [], 1.5 * cfg.target_kl  # --target-kl (0: off), as SB3's PPO
    for _ in range(cfg.optim_steps):
        for idx in torch.randperm(len(actions), generator=rng).chunk(cfg.minibatches):
            log_probs, entropies = agent.log_prob_and_entropy(obs[idx], actions[idx])
            if stop_kl and losses and approximate_kl(log_probs, old_log_probs[idx]) > stop_kl:
                return losses[0]  # the batch has moved pi far enough
            loss = clipped_policy_loss(log_probs, old_log_probs[idx], advantages[idx], cfg.ppo_clip)
            if soft_returns is not None:
                loss = loss + 0.5 * (agent.values(obs[idx]) - soft_returns[idx]).square().mean()
            if cfg.entropy_bonus:
                loss = loss - cfg.entropy_bonus * entropies.mean()
            optimizer_step(optim, loss, params, cfg.max_grad_norm)
            losses.append(loss.item())
    return losses[0]


UPDATES = {"grouped": update_grouped, "value": update_value, "err": update_err}


# ==== 5. Training loop ============================================================================
def make_agent(cfg: Config, env: gym.Env, with_value: bool) -> Agent:
    obs_dim, space = env.observation_space.shape[0], env.action_space
    return Agent(obs_dim, space, cfg.hidden, with_value, cfg.obs_norm, cfg.seed, cfg.init_log_std)


def make_optimizer(cfg: Config, agent: Agent) -> Optimizer:
    """Adam: the policy at --lr, V (grouped has none) at --value-lr, PCL's eta_pi and eta_v."""
    nets = [agent.policy] + ([agent.value] if agent.value is not None else [])
    rates = zip(nets, cfg.learning_rates(0.0), strict=False)
    groups = [dict(params=net.parameters(), lr=lr) for net, lr in rates]
    return torch.optim.Adam(groups, foreach=True)  # one multi-tensor step, the loop's floats


def next_temperature(cfg: Config, batch: Batch, temperature: float, progress: float) -> float:
    """The next batch's T, by the bounded dual step from this one's sampled entropy a step."""
    bounds = cfg.temp_max_step, cfg.temp_min, cfg.temp_max
    target = cfg.target_entropy_at(progress)
    return dual_temperature_step(temperature, batch.mean_entropy, target, cfg.temp_lr, *bounds)


def evaluate(agent: Agent, envs: list[gym.Env], cfg: Config, stream: int, greedy: bool = False,
             confirm: bool = False) -> tuple[np.ndarray, float]:  # fmt: skip
    """Returns and mean entropy of len(envs) episodes on seeds at or above 2^31 (training's are
    below).  Deterministic given (seed, stream, confirm); never perturbs the training generators."""
    rng = np.random.default_rng([cfg.seed, stream, 2 if confirm else 1])
    seeds = rng.integers(2**31, 2**32, size=len(envs))
    if confirm:  # fresh: no confirmation episode replays one of the evaluation it confirms
        evaluation_rng = np.random.default_rng([cfg.seed, stream, 1])
        evaluated = evaluation_rng.integers(2**31, 2**32, cfg.eval_episodes)
        while (replayed := np.isin(seeds, evaluated)).any():
            seeds = np.where(replayed, rng.integers(2**31, 2**32, size=len(envs)), seeds)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    batch = sample_episodes(envs, agent, seeds, 1, generator, greedy=greedy)
    return batch.returns.flatten().numpy(), batch.mean_entropy


def evaluate_iteration(agent: Agent, cfg: Config, run: run_io.Run, temperature: float) -> dict:
    """eval_return every --eval-every iterations and at the last, a first crossing confirmed or not
    by fresh episodes (confirm_return, see run_io.solves), exact_kl at T on an enumerable env."""
    iteration, result = run.state["iteration"] + 1, dict(eval_return=None, confirm_return=None)
    if iteration % cfg.eval_every == 0 or iteration == cfg.iterations:
        returns, _ = evaluate(agent, run.eval_envs, cfg, iteration)
        result["eval_return"] = float(returns.mean())
        if not run.solved and run.threshold is not None and returns.mean() >= run.threshold:
            returns, _ = evaluate(agent, run.confirm_envs, cfg, iteration, confirm=True)
            result["confirm_return"] = float(returns.mean())
    if exact_kl := getattr(run.eval_envs[0].unwrapped, "exact_trajectory_kl", None):
        result["exact_kl"] = exact_kl(agent, temperature) if temperature > 0 else None
    return result  # at T = 0 the law is a point mass and the KL undefined: null


def final_evaluation(agent: Agent, cfg: Config) -> dict:
    """Mean and std of --final-eval-episodes fresh episodes, sampled and greedy; the entropy a step
    of the sampled policy only (a squashed Gaussian's at its mean can exceed the box's maximum)."""
    envs, result = run_io.make_envs(cfg, cfg.final_eval_episodes), {}
    for mode in ("sampled", "greedy"):
        returns, entropy = evaluate(agent, envs, cfg, 0, greedy=mode == "greedy")
        result[mode] = dict(mean=float(returns.mean()), std=float(returns.std()))
        result[mode] |= dict(entropy=entropy) if mode == "sampled" else {}  # greedy: none
    return result


def validate(cfg: Config) -> np.ndarray:
    """--validate: the greedy returns of --load-model's policy, and on an enumerable env the exact
    KL to the law at --temp-start, printed; nothing written but --render video's video."""
    agent = make_agent(cfg, run_io.make_env(cfg), with_value=False)
    run_io.load_policy(agent, cfg.load_model)  # a value net, if any, is not needed
    envs = run_io.make_envs(cfg, cfg.eval_episodes, Path(cfg.load_model).parent / "validate")
    returns, _ = evaluate(agent, envs, cfg, 0, greedy=True)
    envs[0].close()  # with --render video, this saves the video
    exact_kl = getattr(envs[0].unwrapped, "exact_trajectory_kl", None)  # enumerable envs only
    kl = exact_kl(agent, cfg.temp_start) if exact_kl and cfg.temp_start > 0 else None
    run_io.print_validation(cfg, returns, kl)
    return returns


def train(cfg: Config, out: str | Path | None = None) -> tuple[Agent, dict]:
    """Sample a seed-grouped batch, update, evaluate, record; until --iterations, a confirmed
    solve (with --stop-when-solved) or a budget.  Writes into `out` (default: cfg.out, else a
    fresh runs/<env>-<algo>-s<seed>-<time>/).  Returns the agent and what experiment.json holds."""
    check_config(cfg)  # a Config built by hand gets the CLI's checks too
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(cfg.threads)
    envs = run_io.make_envs(cfg, cfg.num_groups * cfg.group_size)
    agent = make_agent(cfg, envs[0], with_value=cfg.algo != "grouped")
    optimizer = make_optimizer(cfg, agent)
    # the run directory, its evaluation envs; a warm start, or --resume's networks and generators
    run, final_eval = run_io.Run(cfg, out, agent, optimizer), None
    with run.ending():  # an interrupt or a non-finite loss ends it; what was recorded stays
        while not run.stop_reason():
            progress = cfg.budget_progress(run.state)
            with run.training():
                # --target-entropy: the T the dual step left (the law at it is the fixed point)
                adapted = cfg.target_entropy
                temperature = run.state["temperature"] if adapted else cfg.temperature_at(progress)
                for group, lr in zip(
                    optimizer.param_groups, cfg.learning_rates(progress), strict=False
                ):
                    group["lr"] = lr
                count = cfg.num_groups if cfg.seed_groups else len(envs)  # seeds: a group's each
                seeds = run.seed_rng.integers(0, 2**31, count)
                batch = sample_episodes(envs, agent, seeds, cfg.group_size, run.action_rng)
                loss = UPDATES[cfg.algo](agent, optimizer, batch, temperature, cfg, run.action_rng)
                if isinstance(agent.normalizer, RunningNormalizer):
                    agent.normalizer.update(batch.observations[..., :-1, :][batch.mask])
                if cfg.target_entropy:  # the next batch's T, from this one's entropy
                    run.state["temperature"] = next_temperature(cfg, batch, temperature, progress)
            with run.evaluating():  # the policy *after* the update
                judged = evaluate_iteration(agent, cfg, run, temperature)
            # train_return, loss and entropy: the batch sampled *before* the update
            sampled = dict(train_return=float(batch.returns.mean()), entropy=batch.mean_entropy)
            run.record(agent, optimizer, int(batch.mask.sum()), **sampled, **judged,
                       temperature=temperature, loss=loss)  # fmt: skip
        with run.evaluating():
            final_eval = final_evaluation(agent, cfg)
        run.eval_envs[0].close()  # with --render video, this saves the last video
    return agent, run.finish(final_eval)


# ==== 6. Python API and command line =============================================================
def load(path: str | Path) -> tuple[Agent, Config]:
    """The agent saved in a checkpoint.pt and the config it was trained with."""
    checkpoint = run_io.load_checkpoint(path, flag="load")
    cfg = config_of(checkpoint["config"])
    agent = make_agent(cfg, run_io.make_env(cfg), "value.0.weight" in checkpoint["agent"])
    agent.load_state_dict(checkpoint["agent"])
    return agent, cfg


make_env = run_io.make_env  # the env of a config, as training makes it
make_config = annealing_config.make_config  # a checked Config: per-env defaults, then yours
UserError = run_io.UserError  # what make_config and train raise on bad input


def main(argv: list[str] | None = None) -> int:
    """The command line: train the run its options describe (or --validate a saved policy)."""

    def command(argv: list[str]) -> tuple[Config, dict | None]:
        cfg = annealing_config.parse_command_line(argv)
        run_io.check_env(cfg)  # refuse a bad env or --render before anything is written
        if cfg.validate:
            validate(cfg)
            return cfg, None
        with run_io.stop_on_signals():
            return cfg, train(cfg)[1]

    return run_io.run_command(command, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
