"""Policy Annealing: a thermodynamics-inspired family of RL algorithms, in one file.

A policy is *annealed* at temperature T when every trajectory tau that starts from the same state
has probability p(tau) proportional to exp(R(tau) / T).  With p(tau) = prod_t p_t and
R(tau) = sum_t R_t, taking logs shows that the *trajectory value*

    V' = sum_t (R_t - T * log p_t)                                           -> trajectory_value

is then one constant (-T log Z) for every trajectory from that state.  Three ways to enforce it:

  grouped  episodes reset with one seed share V'; minimise its spread         -> grouped_loss
  value    learn V(s) and enforce the discounted, bootstrapped per-step form  -> value_loss
  err      feed R' = R - T log p to an ordinary (PPO) policy gradient          -> err_rewards

Sections: 1 Boltzmann math, 2 losses, 3 environments, networks and the seed-grouped sampler,
4 update steps per algorithm, 5 training loop, checkpoints, logging and CLI.
Tensors are laid out (num_groups, group_size, steps, ...); batch = num_groups * group_size.
`mask` is True on real steps; steps past an episode's end are padding and may hold anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

# ================================================================================================
# 1. Boltzmann math
# ================================================================================================


def boltzmann_log_probs(returns: torch.Tensor, temperature: float) -> torch.Tensor:
    """The target law p ∝ exp(R/T) over the last dim, as log-probabilities."""
    # (..., n) -> (..., n); log_softmax subtracts the max first, so it is finite for any T > 0.
    return torch.log_softmax(returns / temperature, dim=-1)


def err_rewards(rewards: torch.Tensor, log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Entropy-regularized reward R' = R - T log p; summed over a trajectory it is V'."""
    # (..., steps) -> (..., steps). T = 0 gives back R exactly: plain policy gradient.
    return rewards - temperature * log_probs


def policy_entropy(log_pi: torch.Tensor) -> torch.Tensor:
    """H(pi) = -sum_a pi(a) log pi(a) over the last dim. (..., num_actions) -> (...)."""
    return -(log_pi.exp() * log_pi).sum(-1)


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # (..., steps) -> (...). `where` before the sum: padding holding nan/inf neither leaks into the
    # value nor into the gradient (the gradient of an unselected `where` branch is exactly 0).
    return torch.where(mask, values, 0).sum(-1)


def trajectory_value(rewards, log_probs, mask, temperature) -> torch.Tensor:
    """V' = sum_t (R_t - T log p_t) over real steps. (..., steps) -> (...)."""
    return masked_sum(err_rewards(rewards, torch.where(mask, log_probs, 0), temperature), mask)


def discounted_sum_ahead(values, mask, discount, horizon=0) -> torch.Tensor:
    """out_t = sum_{0<=i<horizon} discount^i x_{t+i} over real steps (horizon 0: to the end).
    (..., steps) -> (..., steps)."""
    # A (steps, steps) band matrix of discount^(j-t), 0 <= j-t < horizon, instead of a reverse
    # Python loop, or of the gamma^-t cumsum trick, which overflows for long episodes.
    steps = values.shape[-1]
    offset = torch.arange(steps, device=values.device)
    power = (offset[None, :] - offset[:, None]).to(values.dtype)  # [t, j] = j - t
    weights = torch.where((power >= 0) & (power < (horizon or steps)),
                          discount ** power.clamp(min=0), 0)
    return torch.where(mask, values, 0) @ weights.T


# ================================================================================================
# 2. Losses
# ================================================================================================
# Padding counts as nothing.  The original implementation filled steps after termination with
# log(1/|A|); that adds T log|A| per missing step to a shorter episode's V', a bias toward ending
# early that has nothing to do with the rewards.  Here a padded step adds 0 to every sum.


def grouped_loss(rewards, log_probs, mask, temperature) -> torch.Tensor:
    """Mean squared within-group deviation of sum_t log p_t - sum_t R_t / T (= -V'/T).

    rewards, log_probs, mask: (num_groups, group_size, steps) -> scalar >= 0.  In log-probability
    units, so its scale does not depend on the reward scale; zero exactly when p ∝ exp(R/T)
    inside every group.  Its gradient is REINFORCE on the ERR return with a group-mean baseline.
    """
    # -V'/T computed directly: T * (...) / T would lose precision at small T.
    minus_value = masked_sum(log_probs, mask) - masked_sum(rewards, mask) / temperature  # (G, K)
    deviation = minus_value - minus_value.mean(dim=1, keepdim=True)
    return deviation.square().mean()


def trust_region_targets(log_prob_sums, reward_sums, lengths, temperature, clip_eps):
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


def trust_region_loss(log_prob_sums, targets) -> torch.Tensor:
    """Mean squared within-group deviation of (sum_t log p - target).  (G, K) -> scalar.

    Unclipped, it is grouped_loss exactly at every point, not only at the first step: then
    sum log p - target = sum log p - R/T + (group constants), and centring removes the constants."""
    residual = log_prob_sums - targets
    return (residual - residual.mean(dim=1, keepdim=True)).square().mean()


def value_loss(rewards, log_probs, values, mask, terminated, temperature, gamma,
               path_length=0) -> torch.Tensor:
    """Path consistency over paths of d = path_length steps (Nachum et al. 2017):
    V(s_t) = sum_{i<m} gamma^i (R_{t+i} - T log p_{t+i}) + gamma^m V(s_{t+m}), m = min(d, steps
    left); d = 0 is the whole rest of the episode, d = 1 the one-step form
    T log p_t = R_t + gamma V(s_{t+1}) - V(s_t).

    rewards, log_probs, mask: (..., steps); values: (..., steps + 1), V(s_t) at each step and, at
    index = length, the state after the last real step; terminated: (...).  V(s_{t+m}) is 0 when
    t + m is the end of a terminated episode, the network's value otherwise (a bootstrap after
    truncation).  Mean squared residual over real steps; gradients reach both log-probs and
    values.  Zero at the soft-optimal pair (V*, pi*) of a deterministic MDP for every d: there
    R - T log pi* = V*(s) - gamma V*(s'), which telescopes."""
    steps = rewards.shape[-1]
    lengths, t = mask.sum(-1, keepdim=True), torch.arange(steps)
    # index of s_{t+m}, m = end - t: (..., steps), or for d = 0 the episode's end, (..., 1)
    end = torch.minimum(t + path_length, lengths) if path_length else lengths
    soft_return = discounted_sum_ahead(err_rewards(rewards, torch.where(mask, log_probs, 0),
                                                   temperature), mask, gamma, path_length)
    end_value = torch.where((end == lengths) & terminated[..., None], 0, values.gather(-1, end))
    target = soft_return + gamma ** (end - t).clamp(min=0).to(values.dtype) * end_value
    residual = torch.where(mask, values[..., :steps] - target, 0)  # masked before squaring
    return residual.square().sum() / mask.sum().clamp(min=1)


def soft_advantages(rewards, behaviour_log_probs, values, mask, terminated, temperature, gamma,
                    gae_lambda):
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


def group_advantages(rewards, behaviour_log_probs, mask, temperature):
    """V' - group mean of V', the same for every step of a trajectory (GRPO-style baseline).
    (num_groups, group_size, steps) -> (num_groups, group_size, steps).  Exactly 0 when
    log p = R/T + c: then V' = -T c for the whole group."""
    value = trajectory_value(rewards, behaviour_log_probs, mask, temperature)
    return (value - value.mean(dim=1, keepdim=True))[..., None].expand(mask.shape)


def clipped_policy_loss(log_probs, old_log_probs, advantages, clip_eps) -> torch.Tensor:
    """PPO's clipped surrogate, negated for minimisation. (n,) -> scalar."""
    ratio = (log_probs - old_log_probs).exp()
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps)
    return -torch.minimum(ratio * advantages, clipped * advantages).mean()


# ================================================================================================
# 3. Environments, networks and the seed-grouped sampler
# ================================================================================================


class TreeEnv(gym.Env):
    """A small deterministic tree, enumerable so the Boltzmann law can be checked exactly.

    Each node has `num_actions` children; a branch ends at `depth` or, with probability
    `early_end`, earlier, so episodes differ in length.  Rewards are fixed by `tree_seed`; the
    observation is the one-hot index of the node.  Nodes 0 .. num_starts - 1 are the roots of
    separate subtrees; reset(seed) starts at root seed % num_starts, so a seed fixes the start."""

    metadata = {"render_modes": []}

    def __init__(self, depth=4, num_actions=3, tree_seed=0, early_end=0.3, num_starts=1,
                 render_mode=None):
        rng = np.random.default_rng(tree_seed)
        self.num_starts, frontier = num_starts, list(range(num_starts))  # the roots
        self.children, self.rewards = [[] for _ in frontier], [[] for _ in frontier]
        node_depth = [0] * num_starts
        while frontier:
            node = frontier.pop(0)
            if node_depth[node] == depth or (node >= num_starts and rng.random() < early_end):
                continue  # a leaf: no children
            for _ in range(num_actions):
                self.children.append([])
                self.rewards.append([])
                node_depth.append(node_depth[node] + 1)
                self.children[node].append(len(self.children) - 1)
                frontier.append(len(self.children) - 1)
            self.rewards[node] = [float(r) for r in rng.uniform(-1, 1, num_actions)]
        self.num_nodes = len(self.children)
        self.observation_space = gym.spaces.Box(0, 1, (self.num_nodes,), np.float32)
        self.action_space = gym.spaces.Discrete(num_actions)

    def one_hot(self, node):
        obs = np.zeros(self.num_nodes, np.float32)
        obs[node] = 1
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.node = (seed % self.num_starts if seed is not None
                     else int(self.np_random.integers(self.num_starts)))
        return self.one_hot(self.node), {}

    def step(self, action):
        reward = self.rewards[self.node][action]
        self.node = self.children[self.node][action]
        return self.one_hot(self.node), reward, not self.children[self.node], False, {}


gym.register("Tree-v0", entry_point=TreeEnv)


def soft_value_iteration(env: TreeEnv, temperature: float, gamma: float = 1.0):
    """Exact soft-optimal V* and log pi* of a TreeEnv, leaves first.

    V*(s) = T log sum_a exp((r(s,a) + gamma V*(s'_a)) / T); log pi*(a|s) = that term's log-softmax.
    Returns V* (num_nodes,) and log pi* (num_nodes, num_actions), rows of leaves left at 0."""
    values = torch.zeros(env.num_nodes, dtype=torch.float64)
    log_policy = torch.zeros(env.num_nodes, env.action_space.n, dtype=torch.float64)
    for node in reversed(range(env.num_nodes)):  # children always have larger indices
        if env.children[node]:
            q = torch.tensor(env.rewards[node], dtype=torch.float64) + gamma * values[
                env.children[node]]
            values[node] = temperature * torch.logsumexp(q / temperature, 0)
            log_policy[node] = boltzmann_log_probs(q, temperature)
    return values, log_policy


def enumerate_trajectories(env: TreeEnv, start=0):
    """Every start-to-leaf path as (nodes visited before each action, actions, rewards)."""
    paths, stack = [], [([start], [], [])]
    while stack:
        nodes, actions, rewards = stack.pop()
        node = nodes[-1]
        if not env.children[node]:
            paths.append((nodes[:-1], actions, rewards))
            continue
        for action, child in enumerate(env.children[node]):
            reward = env.rewards[node][action]
            stack.append((nodes + [child], actions + [action], rewards + [reward]))
    return paths


@torch.no_grad()
def exact_trajectory_kl(agent, env: TreeEnv, temperature: float, per_start=False):
    """KL(p_policy(tau|s) || p_Boltzmann(tau|s)) over every trajectory from each start s,
    p_Boltzmann(tau|s) ∝ exp(R(tau)/T): the mean over starts, or with per_start their list."""
    env = env.unwrapped
    log_pi = agent.log_probs(torch.eye(env.num_nodes)).double()  # (num_nodes, num_actions)
    kls = []
    for start in range(env.num_starts):
        paths = enumerate_trajectories(env, start)
        log_p = torch.stack([log_pi[nodes, actions].sum() for nodes, actions, _ in paths])
        returns = torch.tensor([sum(rewards) for *_, rewards in paths], dtype=torch.float64)
        kls.append(float((log_p.exp() * (log_p - boltzmann_log_probs(returns, temperature)))
                         .sum()))
    return kls if per_start else sum(kls) / len(kls)


class RunningNormalizer(nn.Module):
    """Observation normalisation from running mean and variance (Chan et al.'s parallel update).

    Used for every env rather than the observation space's bounds: CartPole's velocity bounds are
    infinite and LunarLander's are loose (+-10 for values near +-1).  Updated from training
    batches only, after each update, so sampling and the update see the same policy.  Its
    statistics are buffers: checkpoints carry them."""

    def __init__(self, dim):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))

    def forward(self, obs):
        return ((obs - self.mean) / (self.var + 1e-8).sqrt()).clamp(-10, 10).to(obs.dtype)

    def update(self, obs):  # obs: (n, dim)
        obs = obs.double()
        n, mean, var = obs.shape[0], obs.mean(0), obs.var(0, unbiased=False)
        total = self.count + n
        delta = mean - self.mean
        self.var.copy_((self.var * self.count + var * n + delta.square() * self.count * n / total)
                       / total)
        self.mean.add_(delta * n / total)
        self.count.copy_(total)


def mlp(in_dim, out_dim, hidden, out_gain, generator):
    layers = [nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
              nn.Linear(hidden, out_dim)]
    for layer, gain in zip(layers[::2], [math.sqrt(2), math.sqrt(2), out_gain], strict=False):
        nn.init.orthogonal_(layer.weight, gain, generator=generator)
        nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class Agent(nn.Module):
    """Policy logits network, optional value network, optional observation normaliser."""

    def __init__(self, obs_dim, num_actions, hidden, with_value, obs_norm, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.normalizer = RunningNormalizer(obs_dim) if obs_norm else nn.Identity()
        # gain 0.01: the first policy is nearly uniform, as annealing at high T would want.
        self.policy = mlp(obs_dim, num_actions, hidden, 0.01, generator)
        self.value = mlp(obs_dim, 1, hidden, 1.0, generator) if with_value else None

    def log_probs(self, obs):  # (..., obs_dim) -> (..., num_actions)
        return torch.log_softmax(self.policy(self.normalizer(obs)), dim=-1)

    def values(self, obs):  # (..., obs_dim) -> (...)
        return self.value(self.normalizer(obs)).squeeze(-1)


@dataclass
class Batch:
    observations: torch.Tensor  # (G, K, steps + 1, obs_dim); index = length: obs after last step
    actions: torch.Tensor  # (G, K, steps) long
    rewards: torch.Tensor  # (G, K, steps)
    log_probs: torch.Tensor  # (G, K, steps) log pi(a_t|s_t) of the policy that sampled them
    entropies: torch.Tensor  # (G, K, steps) entropy of pi(.|s_t)
    mask: torch.Tensor  # (G, K, steps) bool, True on real steps
    terminated: torch.Tensor  # (G, K) bool; False = truncated, bootstrap from the last obs

    @property
    def returns(self):  # (G, K)
        return masked_sum(self.rewards, self.mask)

    @property
    def env_steps(self):
        return int(self.mask.sum())

    @property
    def mean_entropy(self):  # over real steps
        return float(masked_sum(self.entropies, self.mask).sum() / self.mask.sum())


class Interrupted(Exception):
    """Raised between env or optimizer steps once SIGINT/SIGTERM arrived."""


STOP_SIGNAL = []  # set by the signal handler; checked between steps, never mid-write


def check_stop():
    if STOP_SIGNAL:
        raise Interrupted


def sample_episodes(envs, agent, seeds, group_size, generator, greedy=False) -> Batch:
    """Run len(envs) episodes to their end; env i resets with seeds[i * len(seeds) // len(envs)]:
    its group's seed if there is one per group, its own if one per episode (--no-seed-groups).

    Only running episodes are stepped: one batched policy forward per time step over them, and no
    env step after an episode ends, so batch.env_steps is exact."""
    count = len(envs)
    observations = [[env.reset(seed=int(seeds[i * len(seeds) // count]))[0]]
                    for i, env in enumerate(envs)]
    actions, rewards, log_probs, entropies = ([[] for _ in envs] for _ in range(4))
    terminated = [False] * count
    running = list(range(count))
    with torch.inference_mode():  # no autograd bookkeeping while stepping
        while running:
            check_stop()
            obs = torch.as_tensor(np.stack([observations[i][-1] for i in running]))
            log_pi = agent.log_probs(obs.float())
            if greedy:
                chosen = log_pi.argmax(-1)
            else:
                chosen = torch.multinomial(log_pi.exp(), 1, generator=generator).squeeze(-1)
            chosen_log_pi = log_pi.gather(-1, chosen[:, None]).squeeze(-1).tolist()
            entropy = policy_entropy(log_pi).tolist()
            still_running = []
            for j, (i, action) in enumerate(zip(running, chosen.tolist(), strict=False)):
                obs_next, reward, term, trunc, _ = envs[i].step(action)
                observations[i].append(obs_next)
                actions[i].append(action)
                rewards[i].append(float(reward))
                log_probs[i].append(chosen_log_pi[j])
                entropies[i].append(entropy[j])
                if term or trunc:
                    terminated[i] = bool(term)
                else:
                    still_running.append(i)
            running = still_running
    return pad_episodes(observations, actions, rewards, log_probs, entropies, terminated,
                        group_size)


def pad_episodes(observations, actions, rewards, log_probs, entropies, terminated, group_size):
    count, steps = len(actions), max(len(a) for a in actions)
    obs_dim = len(observations[0][0])
    obs = np.zeros((count, steps + 1, obs_dim), np.float32)
    padded = {name: np.zeros((count, steps), np.float32) for name in ("r", "lp", "h")}
    act = np.zeros((count, steps), np.int64)
    mask = np.zeros((count, steps), bool)
    for i, length in enumerate(map(len, actions)):
        obs[i, :length + 1] = observations[i]
        act[i, :length], mask[i, :length] = actions[i], True
        for name, source in (("r", rewards), ("lp", log_probs), ("h", entropies)):
            padded[name][i, :length] = source[i]

    def grouped(array):  # (batch, ...) -> (num_groups, group_size, ...)
        return torch.from_numpy(array).reshape(count // group_size, group_size, *array.shape[1:])

    return Batch(grouped(obs), grouped(act), grouped(padded["r"]), grouped(padded["lp"]),
                 grouped(padded["h"]), grouped(mask), grouped(np.array(terminated)))


# ================================================================================================
# 4. Update steps, one per algorithm
# ================================================================================================


def taken_log_probs(agent, batch) -> torch.Tensor:
    """log pi(a_t|s_t) under the current policy. -> (G, K, steps)."""
    log_pi = agent.log_probs(batch.observations[..., :-1, :])
    return log_pi.gather(-1, batch.actions[..., None]).squeeze(-1)


class NonFinite(Exception):
    pass


def optimizer_step(optimizer, loss, params, max_grad_norm):
    check_stop()
    if not torch.isfinite(loss):
        raise NonFinite(f"loss became {loss.item()}")
    optimizer.zero_grad()
    loss.backward()
    if max_grad_norm:
        nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()


def update_grouped(agent, optimizer, batch, temperature, cfg, generator) -> float:
    """--optim-steps full-batch steps on grouped_loss, or on its trust-region form."""
    params = list(agent.parameters())
    with torch.no_grad():
        log_probs = taken_log_probs(agent, batch)
        log_prob_sums = masked_sum(log_probs, batch.mask)
        first_loss = grouped_loss(batch.rewards, log_probs, batch.mask, temperature).item()
        targets = (trust_region_targets(log_prob_sums, batch.returns, batch.mask.sum(-1),
                                        temperature, cfg.clip_eps)
                   if cfg.clip_eps else None)
    for _ in range(cfg.optim_steps):
        log_probs = taken_log_probs(agent, batch)
        if targets is None:
            loss = grouped_loss(batch.rewards, log_probs, batch.mask, temperature)
        else:
            loss = trust_region_loss(masked_sum(log_probs, batch.mask), targets)
        optimizer_step(optimizer, loss, params, cfg.max_grad_norm)
    return first_loss


def update_value(agent, optimizer, batch, temperature, cfg, generator) -> float:
    """--optim-steps full-batch steps on value_loss, policy and value networks together."""
    params, first_loss = list(agent.parameters()), None
    for _ in range(cfg.optim_steps):
        loss = value_loss(batch.rewards, taken_log_probs(agent, batch),
                          agent.values(batch.observations), batch.mask, batch.terminated,
                          temperature, cfg.gamma, cfg.path_length)
        first_loss = loss.item() if first_loss is None else first_loss
        optimizer_step(optimizer, loss, params, cfg.max_grad_norm)
    return first_loss


def update_err(agent, optimizer, batch, temperature, cfg, generator) -> float:
    """PPO on the ERR rewards R - T log p_behaviour: --optim-steps epochs of --minibatches.

    T = 0 is plain PPO; --entropy-bonus adds the usual c * H(pi) to the objective."""
    params = list(agent.parameters())
    with torch.no_grad():
        if cfg.baseline == "group":
            advantages = group_advantages(batch.rewards, batch.log_probs, batch.mask, temperature)
            soft_returns = None
        else:
            advantages, soft_returns = soft_advantages(
                batch.rewards, batch.log_probs, agent.values(batch.observations), batch.mask,
                batch.terminated, temperature, cfg.gamma, cfg.gae_lambda)
    real = batch.mask
    obs, actions = batch.observations[..., :-1, :][real], batch.actions[real]
    old_log_probs, advantages = batch.log_probs[real], advantages[real]
    soft_returns = soft_returns[real] if soft_returns is not None else None
    # No division by the advantages' std, as PPO usually does: near the Boltzmann policy the ERR
    # advantages shrink to 0, and rescaling them to unit std would keep the policy moving forever.
    losses = []
    for _ in range(cfg.optim_steps):
        order = torch.randperm(len(actions), generator=generator)
        for idx in order.chunk(cfg.minibatches):
            log_pi = agent.log_probs(obs[idx])
            log_probs = log_pi.gather(-1, actions[idx, None]).squeeze(-1)
            loss = clipped_policy_loss(log_probs, old_log_probs[idx], advantages[idx], cfg.clip_eps)
            if soft_returns is not None:
                loss = loss + 0.5 * (agent.values(obs[idx]) - soft_returns[idx]).square().mean()
            if cfg.entropy_bonus:
                loss = loss - cfg.entropy_bonus * policy_entropy(log_pi).mean()
            optimizer_step(optimizer, loss, params, cfg.max_grad_norm)
            losses.append(loss.item())
    return losses[0]


UPDATES = {"grouped": update_grouped, "value": update_value, "err": update_err}


# ================================================================================================
# 5. Training loop, checkpoints, logging and CLI
# ================================================================================================

# Per-env defaults; a flag given on the command line wins.  Chosen by the sweeps in the README.
DEFAULTS = {
    # clip_eps 0.05 nats per step (grouped): neither collapse nor stall, see trust_region_targets
    "*": dict(iterations=200, num_groups=4, group_size=4, optim_steps=50, lr=3e-3, temp_start=0.5,
              temp_end=0.5, clip_eps=0.05, gamma=0.99, gae_lambda=0.95, hidden=64, minibatches=4,
              max_grad_norm=0.0, eval_every=5, obs_norm=True, max_env_steps=0),
    "*/value": dict(num_groups=8, group_size=1),
    "*/err": dict(num_groups=8, group_size=1, optim_steps=10, lr=1e-3, temp_start=0.05,
                  temp_end=0.05, clip_eps=0.2, max_grad_norm=0.5),
    "CartPole-v1": dict(iterations=100, eval_every=1),
    # CartPole grouped: small batches, many full-batch steps under the per-step trust region; T 0.2
    # solved 20/20 tuning seeds at a median of 12k env steps, T 0.5 20/20 at 19k (README sweep).
    "CartPole-v1/grouped": dict(num_groups=2, group_size=4, temp_start=0.2, temp_end=0.2),
    "CartPole-v1/err": dict(num_groups=4, lr=2e-3),
    "LunarLander-v3": dict(iterations=300, temp_start=0.1, temp_end=0.1, lr=5e-4),
    # LunarLander err: many minibatch steps per sample (10 epochs x 32), long horizon (gamma
    # 0.999, GAE 0.98 as in the RL-Zoo's PPO), a small temperature.
    "LunarLander-v3/err": dict(iterations=1000, num_groups=8, optim_steps=10, minibatches=32,
                               gamma=0.999, gae_lambda=0.98, temp_start=0.01, temp_end=0.01),
    # Tree-v0: gamma = 1, so the soft-optimal policy is exactly the Boltzmann law over returns.
    "Tree-v0": dict(obs_norm=False, eval_every=10, iterations=40, lr_decay=True, lr=5e-3,
                    temp_start=1.0, temp_end=1.0, gamma=1.0, clip_eps=0.0, num_groups=1,
                    group_size=64),
    "Tree-v0/value": dict(num_groups=16, group_size=1, iterations=80),
    "Tree-v0/err": dict(baseline="group", group_size=32, optim_steps=4, minibatches=1, lr=3e-3,
                        clip_eps=0.2, iterations=80),
}


@dataclass
class Config:
    env: str = "CartPole-v1"
    algo: str = "grouped"
    seed: int = 0
    iterations: int = 100
    num_groups: int = 4
    group_size: int = 4
    optim_steps: int = 50
    lr: float = 3e-3
    lr_decay: bool = False
    temp_start: float = 0.5
    temp_end: float = 0.5
    clip_eps: float = 0.05
    gamma: float = 0.99
    gae_lambda: float = 0.95
    path_length: int = 0
    minibatches: int = 4
    max_grad_norm: float = 0.0
    entropy_bonus: float = 0.0
    baseline: str = "value"
    hidden: int = 64
    obs_norm: bool = True
    eval_every: int = 1
    eval_episodes: int = 32
    confirm_episodes: int = 100
    final_eval_episodes: int = 100
    stop_when_solved: bool = False
    max_env_steps: int = 0
    seed_groups: bool = True
    threads: int = 1
    env_kwargs: dict = dataclasses.field(default_factory=dict)
    label: str = ""
    out: str = ""


def defaults_for(env_id, algo):
    merged = {}
    for key in ("*", f"*/{algo}", env_id, f"{env_id}/{algo}"):
        merged.update(DEFAULTS.get(key, {}))
    return merged


def temperature_at(cfg, iteration) -> float:
    """Exponential schedule temp_start -> temp_end over the run (constant when they are equal)."""
    if cfg.temp_start == cfg.temp_end or cfg.iterations <= 1:
        return cfg.temp_start
    fraction = iteration / (cfg.iterations - 1)
    return cfg.temp_start * (cfg.temp_end / cfg.temp_start) ** fraction


class UserError(Exception):
    """Bad input: reported as one line on stderr, no traceback."""


def make_env(cfg, render_mode=None):
    try:
        env = gym.make(cfg.env, render_mode=render_mode, **cfg.env_kwargs)
    except gym.error.Error as error:
        raise UserError(f"unknown env '{cfg.env}' ({error}); pass a registered gymnasium id such "
                        "as CartPole-v1, LunarLander-v3 or Tree-v0") from None
    except TypeError as error:
        raise UserError(f"env '{cfg.env}' rejected --env-kwargs: {error}") from None
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise UserError(f"env '{cfg.env}' has a {type(env.action_space).__name__} action space; "
                        "policy annealing here needs Discrete actions (try CartPole-v1)")
    if not (isinstance(env.observation_space, gym.spaces.Box)
            and len(env.observation_space.shape) == 1):
        raise UserError(f"env '{cfg.env}' has a {env.observation_space} observation space; "
                        "a flat Box observation is needed (try CartPole-v1)")
    return env


def make_agent(cfg, env, with_value):
    return Agent(env.observation_space.shape[0], int(env.action_space.n), cfg.hidden, with_value,
                 cfg.obs_norm, seed=cfg.seed)


def validate(cfg):
    if cfg.algo not in UPDATES or cfg.baseline not in ("value", "group"):
        raise UserError(f"--algo {cfg.algo} / --baseline {cfg.baseline}: choose --algo from "
                        f"{', '.join(UPDATES)} and --baseline from value, group")
    for name in ("iterations", "num_groups", "group_size", "optim_steps", "hidden", "eval_every",
                 "eval_episodes", "confirm_episodes", "final_eval_episodes", "minibatches",
                 "threads"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, "
                            f"got {getattr(cfg, name)}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise UserError(f"--lr must be a positive number, got {cfg.lr}")
    for name in ("seed", "max_env_steps", "path_length"):
        if getattr(cfg, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    for name in ("temp_start", "temp_end", "clip_eps", "max_grad_norm", "entropy_bonus"):
        value = getattr(cfg, name)
        if not (value >= 0 and math.isfinite(value)):
            raise UserError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
    if (cfg.temp_start == 0) != (cfg.temp_end == 0):
        raise UserError(f"--temp-start {cfg.temp_start} -> --temp-end {cfg.temp_end}: an "
                        "exponential schedule cannot reach or leave 0; make both 0 or both > 0")
    if cfg.algo in ("grouped", "value") and cfg.temp_start == 0:
        raise UserError(f"--algo {cfg.algo} needs a temperature > 0 (it divides by T); "
                        "use --algo err for T = 0")
    if not 0 < cfg.gamma <= 1:
        raise UserError(f"--gamma must be in (0, 1], got {cfg.gamma}")
    if not 0 <= cfg.gae_lambda <= 1:
        raise UserError(f"--gae-lambda must be in [0, 1], got {cfg.gae_lambda}")
    if cfg.algo == "grouped" and cfg.group_size < 2:
        raise UserError("--algo grouped compares episodes within a group: --group-size must be "
                        f">= 2, got {cfg.group_size}")
    if cfg.baseline == "group" and cfg.group_size < 2:
        raise UserError("--baseline group needs --group-size >= 2 (a group of one has "
                        "advantage 0)")
    if cfg.confirm_episodes < cfg.eval_episodes:
        raise UserError(f"--confirm-episodes {cfg.confirm_episodes} < --eval-episodes "
                        f"{cfg.eval_episodes}: a confirmation needs at least as many episodes")
    if cfg.algo == "err" and cfg.clip_eps == 0:
        raise UserError("--algo err needs --clip-eps > 0 (the PPO ratio clip, e.g. 0.2)")


def package_versions():
    import importlib.metadata as metadata
    return {name: metadata.version(name) for name in ("torch", "gymnasium", "numpy")}


def write_atomic(path: Path, data: bytes):
    """Write to a temporary file, then rename: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def write_json(path, obj):
    write_atomic(Path(path), json.dumps(obj, indent=1).encode())


CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "policy-annealing-checkpoint", 1


def save_checkpoint(path, cfg, agent, optimizer, state):
    import io
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
                "env": cfg.env, "env_kwargs": cfg.env_kwargs, "algo": cfg.algo,
                "shapes": agent_shapes(agent), "agent": agent.state_dict(),
                "optimizer": optimizer.state_dict(), "state": state}, buffer)
    write_atomic(Path(path), buffer.getvalue())


def agent_shapes(agent):
    return {name: list(tensor.shape) for name, tensor in agent.state_dict().items()}


def load_checkpoint(path, agent=None):
    """Load with weights_only=True; every way a file can be wrong is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--load-model {path}: no such file; pass a checkpoint.pt from a run "
                        "directory")
    try:
        checkpoint = torch.load(path, weights_only=True)
    except Exception as error:  # truncated zip, pickle garbage, foreign object...
        raise UserError(f"--load-model {path}: cannot be read as a checkpoint "
                        f"({type(error).__name__}); the file is corrupt or truncated") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"--load-model {path}: not a policy-annealing checkpoint; pass the "
                        "checkpoint.pt of a run directory")
    if checkpoint.get("format_version") != CHECKPOINT_VERSION:
        raise UserError(f"--load-model {path}: checkpoint format {checkpoint.get('format_version')}"
                        f", this version reads {CHECKPOINT_VERSION}")
    if agent is not None:
        wanted = {k: v for k, v in agent_shapes(agent).items() if not k.startswith("value.")}
        found = {k: v for k, v in checkpoint["shapes"].items() if not k.startswith("value.")}
        if wanted != found:
            raise UserError(f"--load-model {path}: its network (trained on {checkpoint['env']}) "
                            "does not fit this env, --hidden and --no-obs-norm; load it with "
                            f"--env {checkpoint['env']} and the flags it was trained with")
    return checkpoint


def evaluate(agent, envs, cfg, stream, greedy, purpose=1):
    """Returns and mean entropy of len(envs) episodes on seeds never used in training: training
    seeds are drawn below 2^31, evaluation seeds at or above it.  Deterministic given
    (seed, stream, purpose: 1 evaluation, 2 confirmation), and independent of the training
    generators, so it never perturbs them."""
    rng = np.random.default_rng([cfg.seed, stream, purpose])
    seeds = rng.integers(2**31, 2**32, size=len(envs))
    if purpose == 2:  # fresh: no confirmation episode replays one of the evaluation it confirms
        evaluated = np.random.default_rng([cfg.seed, stream, 1]).integers(2**31, 2**32,
                                                                         cfg.eval_episodes)
        while (replayed := np.isin(seeds, evaluated)).any():
            seeds = np.where(replayed, rng.integers(2**31, 2**32, size=len(envs)), seeds)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    batch = sample_episodes(envs, agent, seeds, 1, generator, greedy=greedy)
    return batch.returns.flatten().numpy(), batch.mean_entropy


def final_evaluation(agent, cfg):
    """Mean and std of --final-eval-episodes fresh episodes, sampled and greedy."""
    envs = [make_env(cfg) for _ in range(cfg.final_eval_episodes)]
    result = {}
    for mode in ("sampled", "greedy"):
        returns, entropy = evaluate(agent, envs, cfg, 0, greedy=mode == "greedy")
        result[mode] = {"mean": float(returns.mean()), "std": float(returns.std()),
                        "entropy": entropy}
    return result


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(cfg: Config, run_dir: Path, load_model=None, resume=False, render=None, quiet=False):
    """The main loop: sample a seed-grouped batch, update, evaluate, record, checkpoint."""
    from tqdm import tqdm

    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(cfg.threads)
    batch_size = cfg.num_groups * cfg.group_size
    envs = [make_env(cfg) for _ in range(batch_size)]
    threshold = envs[0].spec.reward_threshold if envs[0].spec else None
    enumerable = isinstance(envs[0].unwrapped, TreeEnv)
    agent = make_agent(cfg, envs[0], with_value=cfg.algo != "grouped")
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.lr)
    seed_rng = np.random.default_rng(cfg.seed)  # env seeds of training batches
    action_generator = torch.Generator().manual_seed(cfg.seed)  # actions and minibatch order
    history, state = [], {"iteration": 0, "env_steps": 0, "wall_time": 0.0}
    checkpoint_path, experiment_path = run_dir / "checkpoint.pt", run_dir / "experiment.json"
    if resume:
        checkpoint = load_checkpoint(checkpoint_path, agent)
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        state = checkpoint["state"]
        seed_rng.bit_generator.state = state.pop("seed_rng")
        action_generator.set_state(state.pop("action_rng"))
        history = json.loads(experiment_path.read_text())["history"][:state["iteration"]]
    elif load_model:
        # The policy (and normaliser) must fit; a value network is taken when there is one.
        agent.load_state_dict(load_checkpoint(load_model, agent)["agent"], strict=False)

    def solves(record):  # solved = confirmed: a lucky 32-episode evaluation does not count
        return record.get("confirm_return") is not None and record["confirm_return"] >= threshold

    solved = next(filter(solves, history), None)
    experiment = {"config": {**dataclasses.asdict(cfg), "versions": package_versions(),
                             "load_model": str(load_model) if load_model else None},
                  "history": history, "summary": {}}
    eval_envs, confirm_envs, render_env = [], [], None
    if render:
        render_env = make_env(cfg, "human" if render == "human" else "rgb_array")
        if render == "video":
            render_env = gym.wrappers.RecordVideo(render_env, str(run_dir / "videos"),
                                                  episode_trigger=lambda _: True,
                                                  disable_logger=True)
    update = UPDATES[cfg.algo]
    bar = tqdm(total=cfg.iterations, initial=state["iteration"], disable=quiet, unit="it",
               dynamic_ncols=True)
    error = None
    try:
        while (state["iteration"] < cfg.iterations and not (cfg.stop_when_solved and solved)
               and not (cfg.max_env_steps and state["env_steps"] >= cfg.max_env_steps)):
            iteration = state["iteration"]
            temperature = temperature_at(cfg, iteration)
            if cfg.lr_decay:  # linear to 0: Adam's steps stay ~lr near the optimum otherwise
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * (1 - iteration / cfg.iterations)
            start = time.perf_counter()
            seeds = seed_rng.integers(0, 2**31, size=cfg.num_groups if cfg.seed_groups
                                      else batch_size)
            batch = sample_episodes(envs, agent, seeds, cfg.group_size, action_generator)
            loss = update(agent, optimizer, batch, temperature, cfg, action_generator)
            if isinstance(agent.normalizer, RunningNormalizer):
                agent.normalizer.update(batch.observations[..., :-1, :][batch.mask])
            wall_time = state["wall_time"] + time.perf_counter() - start
            env_steps = state["env_steps"] + batch.env_steps
            # train_return, loss and entropy describe the batch sampled *before* this update;
            # eval_return and confirm_return the policy *after* it.
            record = {"iteration": iteration + 1, "env_steps": env_steps,
                      "wall_time": round(wall_time, 4),
                      "train_return": float(batch.returns.mean()), "eval_return": None,
                      "confirm_return": None, "temperature": temperature, "loss": loss,
                      "entropy": batch.mean_entropy}
            if (iteration + 1) % cfg.eval_every == 0 or iteration + 1 == cfg.iterations:
                if len(eval_envs) != cfg.eval_episodes:
                    eval_envs = [make_env(cfg) for _ in range(cfg.eval_episodes)]
                record["eval_return"] = float(evaluate(agent, eval_envs, cfg, iteration + 1,
                                                       greedy=False)[0].mean())
                if solved is None and threshold is not None and record["eval_return"] >= threshold:
                    # A crossing counts only if --confirm-episodes fresh ones also reach it.
                    if len(confirm_envs) != cfg.confirm_episodes:
                        confirm_envs = [make_env(cfg) for _ in range(cfg.confirm_episodes)]
                    returns, _ = evaluate(agent, confirm_envs, cfg, iteration + 1, False, purpose=2)
                    record["confirm_return"] = float(returns.mean())
                if render_env is not None:
                    sample_episodes([render_env], agent, [iteration], 1, None, greedy=True)
            if enumerable:
                # at T = 0 the law is a point mass and the KL undefined: recorded as null
                record["exact_kl"] = (exact_trajectory_kl(agent, envs[0], temperature)
                                      if temperature > 0 else None)
            # The iteration counts from here on: state, record and checkpoint move together.
            history.append(record)
            state.update(iteration=iteration + 1, env_steps=env_steps, wall_time=wall_time)
            if solved is None and solves(record):
                solved = record
            save_checkpoint(checkpoint_path, cfg, agent, optimizer,
                            {**state, "seed_rng": seed_rng.bit_generator.state,
                             "action_rng": action_generator.get_state()})
            write_json(experiment_path, experiment)
            bar.update(1)
            bar.set_postfix(steps=state["env_steps"], train=f"{record['train_return']:.1f}",
                            eval=f"{record['eval_return']:.1f}" if record["eval_return"] is not None
                            else "-", T=f"{temperature:.3g}", loss=f"{loss:.3g}", refresh=False)
    except Interrupted:
        error = "interrupted"
    except NonFinite as exc:
        error = (f"{exc} at iteration {state['iteration'] + 1}: stopped; the last good checkpoint"
                 f" is {checkpoint_path}. Lower --lr or --optim-steps, or raise --temp-start")
    finally:
        bar.close()
    summary = {"iterations": state["iteration"], "env_steps": state["env_steps"],
               "wall_time": round(state["wall_time"], 4),
               "solved_iteration": solved["iteration"] if solved else None,
               "solved_env_steps": solved["env_steps"] if solved else None,
               "solved_wall_time": solved["wall_time"] if solved else None,
               "crossings": [{key: record[key] for key in ("iteration", "env_steps",
                                                           "eval_return", "confirm_return")}
                             for record in history if record.get("confirm_return") is not None],
               "reward_threshold": threshold, "error": error}
    if error is None:
        try:
            summary["final_eval"] = final_evaluation(agent, cfg)
        except Interrupted:
            summary["error"] = "interrupted"
        if enumerable:
            summary["exact_kl"] = history[-1]["exact_kl"] if history else None
    summary["peak_rss_mb"] = round(peak_rss_mb(), 1)
    experiment["summary"] = summary
    write_json(experiment_path, experiment)
    if render_env is not None:
        render_env.close()
    return experiment


def validate_model(cfg, load_model, render, quiet):
    """--validate: greedy evaluation of a saved policy, nothing trained or written."""
    agent = make_agent(cfg, make_env(cfg), with_value=False)
    checkpoint = load_checkpoint(load_model, agent)
    agent.load_state_dict(checkpoint["agent"], strict=False)
    if render:
        env = make_env(cfg, "human" if render == "human" else "rgb_array")
        if render == "video":
            env = gym.wrappers.RecordVideo(env, str(Path(load_model).parent / "videos"),
                                           episode_trigger=lambda _: True, disable_logger=True)
        envs = [env]
        returns = [float(sample_episodes(envs, agent, [2**31 + i], 1, None, True).returns.sum())
                   for i in range(cfg.eval_episodes)]
        env.close()
        returns = np.array(returns)
    else:
        envs = [make_env(cfg) for _ in range(cfg.eval_episodes)]
        returns, _ = evaluate(agent, envs, cfg, 0, greedy=True)
    print(f"{cfg.env}: greedy return {returns.mean():.1f} ± {returns.std():.1f} over "
          f"{len(returns)} episodes ({load_model})")
    env = make_env(cfg).unwrapped
    if isinstance(env, TreeEnv) and cfg.temp_start > 0:  # enumerable: check the law exactly
        print(f"{cfg.env}: exact KL(p_policy || p_Boltzmann at T={cfg.temp_start:g}) = "
              f"{exact_trajectory_kl(agent, env, cfg.temp_start):.2e}")
    return returns


# ---- command line -----------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UserError(f"{message} (see --help)")


def defaults_help():
    common = DEFAULTS["*"]
    lines = ["defaults (a flag given on the command line wins):",
             "  all: " + ", ".join(f"{k}={v}" for k, v in common.items())]
    for env in ("CartPole-v1", "LunarLander-v3", "Tree-v0"):
        for algo in UPDATES:
            changed = {k: v for k, v in defaults_for(env, algo).items() if common.get(k) != v}
            lines.append(f"  {env} --algo {algo}: " + ", ".join(f"{k}={v}"
                                                             for k, v in changed.items()))
    return "\n".join(lines)


def build_parser():
    parser = Parser(prog="policy_annealing.py", description=__doc__.split("\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter, epilog=defaults_help()
                    + "\n\ntables and curves: python report.py report|plot runs/*/experiment.json")
    add = parser.add_argument
    add("--env", default="CartPole-v1", help="gymnasium id: Box observations, Discrete actions")
    add("--algo", default="grouped", choices=list(UPDATES))
    add("--seed", type=int, default=0, help="fixes env seeds, network init and action sampling")
    add("--iterations", type=int, help="batches to sample and train on")
    add("--num-groups", type=int, help="seed groups per batch")
    add("--group-size", type=int, help="episodes per group, all reset with the group's seed")
    add("--no-seed-groups", dest="seed_groups", action="store_false", default=None,
        help="ablation: every episode gets its own seed instead of its group's")
    add("--batch-size", type=int, help="episodes per batch = num-groups * group-size (optional)")
    add("--optim-steps", type=int, help="optimizer steps per batch (err: PPO epochs)")
    add("--minibatches", type=int, help="err: minibatches per epoch")
    add("--lr", type=float, help="Adam learning rate")
    add("--lr-decay", action="store_true", default=None,
        help="decay the learning rate linearly to 0 over --iterations")
    add("--temp-start", type=float, help="temperature T at the first iteration")
    add("--temp-end", type=float, help="T at the last iteration (exponential schedule)")
    add("--clip-eps", type=float, help="grouped: trust region, nats per episode step that a "
        "trajectory's log-prob may move relative to its group per batch (0 = none); err: PPO "
        "ratio clip")
    add("--gamma", type=float, help="discount (value, err)")
    add("--gae-lambda", type=float, help="err: GAE lambda")
    add("--path-length", type=int, help="value: steps per consistency path (0 = to the end)")
    add("--entropy-bonus", type=float, help="err: coefficient of the usual H(pi) "
                                                         "bonus (use with T = 0)")
    add("--baseline", choices=["value", "group"],
        help="err: learned soft value with GAE, or the group mean of V' (GRPO-style)")
    add("--max-grad-norm", type=float, help="gradient-norm clip, 0 = none")
    add("--hidden", type=int, help="width of the two hidden layers")
    add("--no-obs-norm", dest="obs_norm", action="store_false", default=None,
        help="feed raw observations (on by default except for Tree-v0)")
    add("--eval-every", type=int, help="evaluate every N iterations")
    add("--eval-episodes", type=int, help="episodes per evaluation")
    add("--confirm-episodes", type=int, help="fresh episodes that must also reach the threshold "
                                             "for an evaluation's crossing to count as solved")
    add("--stop-when-solved", action="store_true", default=None,
        help="stop at the first solving evaluation")
    add("--max-env-steps", type=int, help="also stop once this many env steps are used "
                                              "(0 = no limit)")
    add("--threads", type=int, help="torch threads (default 1; they change the floating-point "
                                    "results: a seed reproduces a run only with the same count)")
    add("--env-kwargs", type=json.loads, help="JSON passed to gym.make, e.g. "
                                                          "'{\"tree_seed\": 1}'")
    add("--label", help="name of this run in plots and reports")
    add("--out", help="run directory (default runs/<env>-<algo>-s<seed>-<timestamp>/)")
    add("--overwrite", action="store_true", help="reuse an --out that already holds a run")
    add("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    add("--load-model", metavar="PATH", help="start from (or with --validate, evaluate) a "
                                             "checkpoint.pt")
    add("--validate", action="store_true", help="only evaluate --load-model, greedily")
    add("--render", choices=["human", "video"], help="show or record one greedy episode per "
                                                     "evaluation")
    add("--quiet", action="store_true", help="no progress bar and no summary line")
    return parser


def config_from_args(args) -> Config:
    values = defaults_for(args.env, args.algo)
    for field in dataclasses.fields(Config):
        given = getattr(args, field.name, None)
        if given is not None:
            values[field.name] = given
    if args.batch_size is not None:
        groups, size = values.get("num_groups"), values.get("group_size")
        if args.num_groups is not None and args.group_size is not None:
            if args.num_groups * args.group_size != args.batch_size:
                raise UserError(f"--batch-size {args.batch_size} != --num-groups {args.num_groups}"
                                f" * --group-size {args.group_size}; give two of the three")
        elif args.num_groups is not None:
            size = args.batch_size // max(args.num_groups, 1)
            groups = args.num_groups
        else:
            groups = args.batch_size // max(size, 1)
        if args.batch_size < 1 or groups * size != args.batch_size:
            raise UserError(f"--batch-size {args.batch_size} is not a multiple of the group size "
                            f"{size}; give a multiple, or --num-groups and --group-size")
        values["num_groups"], values["group_size"] = groups, size
    cfg = Config(**{k: v for k, v in values.items() if k in Config.__dataclass_fields__})
    validate(cfg)
    return cfg


def prepare_run_dir(args, cfg) -> Path:
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "experiment.json").is_file() or not (run_dir / "checkpoint.pt").is_file():
            raise UserError(f"--resume {run_dir}: no experiment.json and checkpoint.pt there; "
                            "pass the directory of an earlier run")
        return run_dir
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.out or f"runs/{cfg.env}-{cfg.algo}-s{cfg.seed}-{stamp}")
    if (run_dir / "experiment.json").exists() and not args.overwrite:
        raise UserError(f"--out {run_dir} already holds a run; pass --resume {run_dir} to continue"
                        " it, --overwrite to replace it, or another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] in (["plot"], ["report"]):  # tables and curves live beside the method
            import report
            return report.main(argv)
        args = build_parser().parse_args(argv)
        if args.resume:
            saved = json.loads((Path(args.resume) / "experiment.json").read_text())["config"] \
                if (Path(args.resume) / "experiment.json").is_file() else None
            if saved is None:
                raise UserError(f"--resume {args.resume}: no experiment.json there; pass the "
                                "directory of an earlier run")
            cfg = Config(**{k: v for k, v in saved.items() if k in Config.__dataclass_fields__})
            if args.iterations is not None:
                cfg.iterations = args.iterations
            validate(cfg)
        else:
            cfg = config_from_args(args)
        if args.validate:
            if not args.load_model:
                raise UserError("--validate evaluates a saved policy: add --load-model PATH")
            validate_model(cfg, args.load_model, args.render, args.quiet)
            return 0
        make_env(cfg).close()  # fail on a bad env before creating a run directory
        run_dir = prepare_run_dir(args, cfg)
        cfg.out = str(run_dir)
        handlers = {sig: signal.signal(sig, lambda s, f: STOP_SIGNAL.append(s))
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            experiment = train(cfg, run_dir, args.load_model, bool(args.resume), args.render,
                               args.quiet)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = experiment["summary"]
    if summary["error"] == "interrupted":
        print(f"interrupted: {summary['iterations']} iterations kept in {run_dir}; continue with "
              f"--resume {run_dir}", file=sys.stderr)
        return 128 + STOP_SIGNAL[0]
    if summary["error"]:
        print(f"error: {summary['error']}", file=sys.stderr)
        return 1
    if not args.quiet:
        final = summary["final_eval"]
        solved = (f"solved at {summary['solved_env_steps']} env steps, "
                  f"{summary['solved_wall_time']:.1f} s" if summary["solved_env_steps"]
                  else "not solved")
        print(f"{cfg.env} {cfg.algo} seed {cfg.seed}: {solved}; final return "
              f"{final['sampled']['mean']:.1f} sampled, {final['greedy']['mean']:.1f} greedy; "
              f"{summary['env_steps']} env steps, {summary['wall_time']:.1f} s training -> "
              f"{run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
