"""Tests of the method in policy_annealing.py, in the order of its sections: 1 Boltzmann math,
2 losses, 3 networks and sampler, 4 updates, 5 training loop, 6 options and command line; then
toy_bandit.py.  Property tests: the losses vanish exactly at p ∝ exp(R/T), and nowhere else,
asserted in float64.  Files, checkpoints, resume, signals and the command line's one-line errors
are tested in test_run_io.py, report.py in test_report.py.

Tests marked slow update or train a policy, or run the toy bandit: `make test-fast` leaves them
out."""

import copy
import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import annealing_config
import policy_annealing as pa
import tree_env
from testing_helpers import (
    SCHEDULED,
    SMOKE,
    config,
    parsed_config,
    recorded,
    train,
    validate_model,
    without_wall_time,
)

HERE = Path(__file__).parent
F64 = torch.float64  # exactness is asserted in float64; networks stay float32
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
temperatures = st.floats(1e-3, 1e2).map(float)  # LunarLander runs at T = 0.01


# ==== 1. Boltzmann math ===========================================================================


# ---- Boltzmann law -------------------------------------------------------------------------------


@SETTINGS
@given(st.lists(st.floats(-100, 100), min_size=2, max_size=8), temperatures)
def test_boltzmann_log_probs_normalise_and_limit(returns, temperature):
    returns = torch.tensor(returns, dtype=F64)
    log_p = pa.boltzmann_log_probs(returns, temperature)
    assert torch.logsumexp(log_p, 0).item() == pytest.approx(0, abs=1e-12)
    # log p differences are exactly (R_i - R_j) / T
    assert torch.allclose(
        log_p - log_p[0],
        (returns - returns[0]) / temperature,
        atol=1e-9 * (1 + returns.abs().max().item() / temperature),
    )
    hot = pa.boltzmann_log_probs(returns, 1e12).exp()
    assert torch.allclose(hot, torch.full_like(hot, 1 / len(returns)), atol=1e-9)
    assume((returns == returns.max()).sum() == 1 and (returns.max() - returns).sort()[0][1] > 1e-3)
    cold = pa.boltzmann_log_probs(returns, 1e-6).exp()
    assert cold[returns.argmax()].item() == pytest.approx(1, abs=1e-12)


def test_err_rewards_subtract_t_log_p():
    """R' = R - T log p, by hand at T = 0.5, for a positive and a negative reward: an unlikely
    action (log p = -3) earns 1.5, a likely one (log p = -0.5) 0.25.  At T = 0 the sign of the
    T log p term cannot show; here R + T log p would give 0.75 and -3.5."""
    rewards = torch.tensor([1.0, -2.0], dtype=F64)
    log_probs = torch.tensor([-0.5, -3.0], dtype=F64)
    assert pa.err_rewards(rewards, log_probs, 0.5).tolist() == [1.25, -0.5]
    assert pa.err_rewards(rewards, log_probs, 0.0).tolist() == [1.0, -2.0]


# ---- exact soft-optimal solutions of random trees ------------------------------------------------


def soft_value_iteration(env, temperature: float, gamma: float = 1.0):
    """Exact soft-optimal V* and log pi* of a TreeEnv, leaves first.

    V*(s) = T log sum_a exp((r(s,a) + gamma V*(s'_a)) / T); log pi*(a|s) = that term's log-softmax.
    Returns V* (num_nodes,) and log pi* (num_nodes, num_actions), rows of leaves left at 0."""
    values = torch.zeros(env.num_nodes, dtype=F64)
    log_policy = torch.zeros(env.num_nodes, env.action_space.n, dtype=F64)
    for node in reversed(range(env.num_nodes)):  # children always have larger indices
        if env.children[node]:
            children = values[env.children[node]]
            q = torch.tensor(env.rewards[node], dtype=F64) + gamma * children
            values[node] = temperature * torch.logsumexp(q / temperature, 0)
            log_policy[node] = pa.boltzmann_log_probs(q, temperature)
    return values, log_policy


def exact_kl(agent, env, temperature, per_start=False):
    return env.unwrapped.exact_trajectory_kl(agent, temperature, per_start)


trees = st.builds(
    lambda depth, actions, seed, early: tree_env.TreeEnv(depth, actions, seed, early),
    st.integers(1, 4),
    st.integers(2, 3),
    st.integers(0, 10**6),
    st.sampled_from([0.0, 0.3, 0.6]),
)


gammas = st.one_of(st.just(1.0), st.floats(0.5, 0.999))


@SETTINGS
@given(trees, temperatures)
def test_trajectory_value_equals_soft_value_of_root(env, temperature):
    rewards, log_probs, _, mask, _, values = optimal_batch(env, temperature, 1.0)
    v_prime = pa.trajectory_value(rewards, log_probs, mask, temperature)
    assert torch.allclose(
        v_prime, torch.full_like(v_prime, values[0].item()), atol=1e-9 * (1 + abs(values[0].item()))
    )
    # and the optimal policy's trajectory law is the Boltzmann law over returns
    log_p = pa.masked_sum(log_probs, mask)[0]
    target = pa.boltzmann_log_probs(pa.masked_sum(rewards, mask)[0], temperature)
    assert torch.allclose(log_p, target, atol=1e-9 * (1 + 10 / temperature))


@pytest.mark.parametrize("num_starts", [1, 3])
def test_exact_kl_is_zero_for_the_soft_optimal_policy(num_starts):
    env = tree_env.TreeEnv(tree_seed=3, num_starts=num_starts)
    _, log_policy = soft_value_iteration(env, 0.7)

    class Optimal:  # outputs log pi itself: the softmax head gives it back
        head = pa.CategoricalHead(env.action_space)

        def policy_outputs(self, obs):
            return obs.double() @ log_policy

    kls = exact_kl(Optimal(), env, 0.7, per_start=True)
    assert len(kls) == num_starts and max(map(abs, kls)) < 1e-12
    assert min(exact_kl(Optimal(), env, 0.35, per_start=True)) > 1e-3
    assert exact_kl(Optimal(), env, 0.35) == pytest.approx(
        np.mean(exact_kl(Optimal(), env, 0.35, per_start=True)), rel=1e-12
    )


def test_exact_kl_is_the_policys_kl_to_the_law_in_that_direction():
    """Off the law, Tree's exact KL is KL(p_policy || p_law) = sum_tau p (log p - log q), walked
    here over the tree's children by hand: zero at the law cannot tell it from KL(q || p)."""
    env, temperature = tree_env.TreeEnv(depth=3, tree_seed=5, num_starts=2, early_end=0.3), 0.7
    log_policy = torch.log_softmax(torch.randn(env.num_nodes, env.action_space.n,
                                               generator=torch.Generator().manual_seed(2),
                                               dtype=F64), -1)  # fmt: skip

    class Random:  # a fixed policy far from the law: outputs log pi itself
        head = pa.CategoricalHead(env.action_space)

        def policy_outputs(self, obs):
            return obs.double() @ log_policy

    def paths(node):  # (log p, R) of every path from node to a leaf
        if not env.children[node]:
            return [(0.0, 0.0)]
        return [(float(log_policy[node, action]) + log_p, env.rewards[node][action] + rest)
                for action, child in enumerate(env.children[node])
                for log_p, rest in paths(child)]  # fmt: skip

    expected = []
    for start in range(env.num_starts):
        log_p, returns = map(np.array, zip(*paths(start), strict=True))
        log_q = returns / temperature - np.logaddexp.reduce(returns / temperature)
        expected.append(float((np.exp(log_p) * (log_p - log_q)).sum()))
        assert expected[-1] > 0.05
    assert exact_kl(Random(), env, temperature, per_start=True) == pytest.approx(expected, rel=1e-9)


# ==== 2. Losses ===================================================================================


# ---- random grouped batches ----------------------------------------------------------------------


@st.composite
def grouped_batches(draw):
    """(rewards, log_probs, mask, T) with sum_t log p = R/T + c_group, split arbitrarily over the
    real steps; padding filled with garbage (nan, inf, large numbers)."""
    groups, size, steps = draw(st.integers(1, 4)), draw(st.integers(2, 5)), draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    temperature = draw(temperatures)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, steps + 1, size=(groups, size))
    mask = torch.as_tensor(np.arange(steps) < lengths[..., None])
    rewards = torch.as_tensor(rng.uniform(-10, 10, (groups, size, steps)))
    totals = pa.masked_sum(rewards, mask) / temperature + torch.as_tensor(
        rng.normal(0, 5, (groups, 1))
    )  # (G, K): R/T + c_group
    split = torch.as_tensor(rng.normal(0, 1, (groups, size, steps)))  # arbitrary weights...
    split = torch.where(mask, split, 0)
    split[..., 0] += 1 - split.sum(-1)  # ...that sum to 1 over the real steps
    log_probs = totals[..., None] * split
    garbage = torch.as_tensor(rng.choice([np.nan, np.inf, -np.inf, 1e30], (groups, size, steps)))
    rewards = torch.where(mask, rewards, garbage)
    log_probs = torch.where(mask, log_probs, garbage.flip(-1))
    return rewards, log_probs, mask, temperature, rng


def scale_of(rewards, mask, temperature):
    """Magnitude of the log-prob totals, for a relative tolerance."""
    return 1 + float(pa.masked_sum(rewards.abs(), mask).max()) / temperature


@SETTINGS
@given(grouped_batches())
def test_grouped_loss_and_gradient_vanish_at_boltzmann(batch):
    rewards, log_probs, mask, temperature, _ = batch
    log_probs = log_probs.clone().requires_grad_()
    loss = pa.grouped_loss(rewards, log_probs, mask, temperature)
    loss.backward()
    tolerance = 1e-9 * scale_of(rewards, mask, temperature)
    assert 0 <= loss.item() <= tolerance**2 * 10
    assert torch.isfinite(log_probs.grad).all()
    assert log_probs.grad.abs().max() <= tolerance


@SETTINGS
@given(grouped_batches(), st.integers(0, 2**32 - 1))
def test_grouped_loss_is_the_spread_of_any_other_split(batch, seed):
    """Move the trajectories' total log-probs by delta: the loss is the within-group variance of
    delta, so it is > 0 unless delta is constant inside every group."""
    rewards, log_probs, mask, temperature, _ = batch
    delta = torch.as_tensor(np.random.default_rng(seed).normal(0, 1, mask.shape[:2]))
    lengths = mask.sum(-1)
    moved = log_probs.clone()
    moved[torch.arange(mask.shape[0])[:, None], torch.arange(mask.shape[1]), lengths - 1] += delta
    loss = pa.grouped_loss(rewards, moved, mask, temperature).item()
    spread = (delta - delta.mean(1, keepdim=True)).square().mean().item()
    assert spread > 0 and loss > 0
    assert loss == pytest.approx(spread, rel=1e-6, abs=1e-9 * scale_of(rewards, mask, temperature))


@SETTINGS
@given(grouped_batches(), st.integers(0, 2**32 - 1), st.floats(1e-2, 1e2))
def test_grouped_loss_invariances(batch, seed, scale):
    rewards, log_probs, mask, temperature, rng = batch
    rng = np.random.default_rng(seed)
    delta = torch.as_tensor(rng.normal(0, 1, mask.shape[:2]))  # off-Boltzmann, loss > 0
    log_probs = log_probs.clone()
    log_probs[..., 0] += delta
    loss = pa.grouped_loss(rewards, log_probs, mask, temperature).item()
    close = dict(rel=1e-6, abs=1e-9 * scale_of(rewards, mask, temperature))
    # a per-group shift of the total reward (here on each trajectory's first step)
    shifted = rewards.clone()
    shifted[..., 0] += torch.as_tensor(rng.normal(0, 10, (mask.shape[0], 1)))
    assert pa.grouped_loss(shifted, log_probs, mask, temperature).item() == pytest.approx(
        loss, **close
    )
    # R and T scaled together
    assert pa.grouped_loss(
        rewards * scale, log_probs, mask, temperature * scale
    ).item() == pytest.approx(loss, **close)
    # order within a group
    order = torch.as_tensor(rng.permutation(mask.shape[1]))
    assert pa.grouped_loss(
        rewards[:, order], log_probs[:, order], mask[:, order], temperature
    ).item() == pytest.approx(loss, **close)

    # contents of padding: value and gradient
    def loss_and_grad(fill):
        lp = torch.where(mask, log_probs, fill).requires_grad_()
        value = pa.grouped_loss(torch.where(mask, rewards, fill), lp, mask, temperature)
        value.backward()
        return value.item(), lp.grad

    first, grad_a = loss_and_grad(torch.full_like(rewards, float("nan")))
    second, grad_b = loss_and_grad(torch.as_tensor(rng.normal(0, 1e6, mask.shape)))
    assert first == second == pytest.approx(loss, **close)
    assert torch.equal(grad_a, grad_b) and (grad_a[~mask] == 0).all()


def test_grouped_loss_finite_at_extreme_temperatures_and_rewards():
    rng = np.random.default_rng(0)
    mask = torch.as_tensor(rng.random((3, 4, 50)) < 0.8)
    for dtype in (torch.float32, torch.float64):
        rewards = torch.as_tensor(rng.uniform(-1e4, 1e4, mask.shape), dtype=dtype)
        log_probs = torch.as_tensor(rng.uniform(-5, 0, mask.shape), dtype=dtype).requires_grad_()
        for temperature in (1e-3, 1e3):
            loss = pa.grouped_loss(rewards, log_probs, mask, temperature)
            loss.backward()
            assert torch.isfinite(loss) and loss > 0 and torch.isfinite(log_probs.grad).all()


# ---- trust region (grouped) ----------------------------------------------------------------------


@st.composite
def trust_region_cases(draw):
    """log-prob sums S0 at sampling, reward sums R, episode lengths, T, clip_eps (nats per step),
    and a later point S.  (G, K) each."""
    groups, size = draw(st.integers(1, 4)), draw(st.integers(2, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    temperature, clip_eps = draw(temperatures), draw(st.floats(0.01, 5))
    first = torch.as_tensor(rng.normal(-20, 10, (groups, size)))
    returns = torch.as_tensor(rng.uniform(-50, 50, (groups, size)))
    lengths = torch.as_tensor(rng.integers(1, 50, (groups, size)), dtype=F64)
    later = first + torch.as_tensor(rng.normal(0, 3, (groups, size)))
    return first, returns, lengths, temperature, clip_eps, later, rng


def as_single_steps(returns, log_prob_sums):
    """(G, K) sums as one-step episodes, the layout grouped_loss takes."""
    return returns[..., None], log_prob_sums[..., None], torch.ones(*returns.shape, 1, dtype=bool)


@SETTINGS
@given(trust_region_cases())
def test_unclipped_trust_region_is_grouped_loss_everywhere(case):
    """Value and gradient equal grouped_loss at any later point, not only where the targets were
    made (an uncentred fit agrees only there)."""
    first, returns, lengths, temperature, _, later, _ = case
    targets = pa.trust_region_targets(first, returns, lengths, temperature, math.inf)
    later = later.clone().requires_grad_()
    fitted = pa.trust_region_loss(later, targets)
    (grad_fitted,) = torch.autograd.grad(fitted, later)
    rewards, log_probs, mask = as_single_steps(returns, later)
    grouped = pa.grouped_loss(rewards, log_probs, mask, temperature)
    (grad_grouped,) = torch.autograd.grad(grouped, later)
    scale = 1 + 100 / temperature
    assert fitted.item() == pytest.approx(grouped.item(), rel=1e-9, abs=1e-9 * scale**2)
    assert torch.allclose(grad_fitted, grad_grouped, atol=1e-9 * scale)


@SETTINGS
@given(trust_region_cases(), st.floats(-50, 50))
def test_trust_region_ignores_a_groupwide_shift_of_log_probs(case, shift):
    """Only differences within a group mean anything: a constant added to a group's log-prob sums
    (at sampling, or later) changes neither the loss nor where it is minimal."""
    first, returns, lengths, temperature, clip_eps, later, rng = case
    which = torch.as_tensor(rng.integers(0, 2, (first.shape[0], 1)), dtype=F64)
    targets = pa.trust_region_targets(first, returns, lengths, temperature, clip_eps)
    moved = pa.trust_region_targets(first + shift * which, returns, lengths, temperature, clip_eps)
    loss = pa.trust_region_loss(later, targets).item()
    close = dict(rel=1e-9, abs=1e-12 * (1 + targets.abs().max().item() + abs(shift)) ** 2)
    assert pa.trust_region_loss(later, moved).item() == pytest.approx(loss, **close)
    assert pa.trust_region_loss(later + shift * which, targets).item() == pytest.approx(
        loss, **close
    )


@SETTINGS
@given(trust_region_cases())
def test_clipped_trust_region_moves_no_centred_log_prob_more_than_eps_per_step(case):
    """At the clipped fit's minimum, every trajectory's centred log-prob has moved by at most
    eps * its length, and toward R/T; unclipped where the whole step already fits."""
    first, returns, lengths, temperature, clip_eps, _, _ = case
    targets = pa.trust_region_targets(first, returns, lengths, temperature, clip_eps)
    # the fit's minimum (loss 0) is the targets, up to a shift of each group

    def centred(x):
        return x - x.mean(1, keepdim=True)

    moved = centred(targets) - centred(first)
    wanted = centred(returns / temperature) - centred(first)
    assert (moved.abs() <= clip_eps * lengths * (1 + 1e-12)).all()
    assert ((moved * wanted) >= 0).all()  # each member moves the way R/T asks
    fits = (wanted.abs() <= clip_eps * lengths).all(1)
    assert torch.allclose(moved[fits], wanted[fits], atol=1e-9 * (1 + 100 / temperature))
    # a group that does not fit moves as far as allowed: its tightest member by exactly eps * length
    tightest = (moved / (clip_eps * lengths)).abs().amax(1)
    assert torch.allclose(tightest[~fits], torch.ones_like(tightest[~fits]), atol=1e-9)


def test_trust_region_example_from_the_review():
    """One group of one-step episodes, R = (100, 0, 0, 0), T = 0.5, eps = 2: the centred fit
    moves the best trajectory by at most 2 and the others equally; the uncentred fit took 2 nats
    from each of the others, a per-member clamp moves the best by 3."""
    first = torch.zeros(1, 4, dtype=F64)
    targets = pa.trust_region_targets(
        first, torch.tensor([[100.0, 0, 0, 0]], dtype=F64), torch.ones(1, 4), 0.5, 2
    )
    moved = targets - targets.mean(1, keepdim=True)
    assert torch.allclose(moved, torch.tensor([[2, -2 / 3, -2 / 3, -2 / 3]], dtype=F64))


# ---- value loss on exact soft-optimal solutions of random trees ----------------------------------


def optimal_batch(env, temperature, gamma, truncate_seed=None):
    """Every trajectory of the tree under pi*, padded; with truncate_seed each one is cut at a
    random length (not terminated, bootstrap V*(s_cut)).  Padding holds nan."""
    values, log_policy = soft_value_iteration(env, temperature, gamma)
    rng = np.random.default_rng(truncate_seed)
    paths = env.trajectories()
    steps = max(len(actions) for _, actions, _ in paths)
    shape = (1, len(paths), steps)
    rewards = torch.full(shape, float("nan"), dtype=F64)
    log_probs = torch.full(shape, float("nan"), dtype=F64)
    v = torch.full((1, len(paths), steps + 1), float("nan"), dtype=F64)
    mask = torch.zeros(shape, dtype=torch.bool)
    terminated = torch.ones(shape[:2], dtype=torch.bool)
    for i, (nodes, actions, path_rewards) in enumerate(paths):
        length = len(actions)
        if truncate_seed is not None and length > 1:
            length = int(rng.integers(1, length))
            terminated[0, i] = False
        visited = nodes + [env.children[nodes[-1]][actions[-1]]]
        rewards[0, i, :length] = torch.tensor(path_rewards[:length], dtype=F64)
        log_probs[0, i, :length] = log_policy[nodes[:length], actions[:length]]
        v[0, i, : length + 1] = values[visited[: length + 1]]
        mask[0, i, :length] = True
    return rewards, log_probs, v, mask, terminated, values


@pytest.mark.parametrize("path_length", [0, None, 1, 2, 3])  # 0, None: the rest of the episode
@SETTINGS
@given(
    trees,
    temperatures,
    gammas,
    st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    st.sampled_from([float("nan"), 1e3, -7.0]),
)
def test_value_loss_vanishes_at_soft_optimum(
    path_length, env, temperature, gamma, truncate_seed, end_fill
):
    """For every path length; the value at index = length of a terminated episode is garbage
    (V* of a leaf would be 0 anyway): it must not be bootstrapped from."""
    rewards, log_probs, values, mask, terminated, _ = optimal_batch(
        env, temperature, gamma, truncate_seed
    )
    scale = 1 + values.nan_to_num().abs().max().item() + 10 / temperature
    at_end = torch.arange(values.shape[-1]) == mask.sum(-1, keepdim=True)
    values = torch.where(at_end & terminated[..., None], end_fill, values).requires_grad_()
    log_probs.requires_grad_()
    loss = pa.value_loss(
        rewards, log_probs, values, mask, terminated, temperature, gamma, path_length
    )
    loss.backward()
    assert loss.item() <= (1e-10 * scale) ** 2
    assert values.grad.abs().max() <= 1e-9 * scale and log_probs.grad.abs().max() <= 1e-9 * scale
    assert torch.isfinite(values.grad).all() and torch.isfinite(log_probs.grad).all()


@SETTINGS
@given(
    trees,
    temperatures,
    gammas,
    st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["value", "log_prob"]),
    st.sampled_from([0, None, 1, 2, 3]),
)
def test_value_loss_positive_off_optimum(
    env, temperature, gamma, truncate_seed, seed, which, path_length
):
    rewards, log_probs, values, mask, terminated, _ = optimal_batch(
        env, temperature, gamma, truncate_seed
    )
    rng = np.random.default_rng(seed)
    real = mask.nonzero()
    i = real[rng.integers(len(real))].tolist()
    if which == "value":
        values[tuple(i)] += 0.1
    else:
        log_probs[tuple(i)] += 0.1
    loss = pa.value_loss(
        rewards, log_probs, values, mask, terminated, temperature, gamma, path_length
    ).item()
    assert loss > 1e-6 * min(1, temperature) ** 2


def step_by_step_residuals(rewards, log_probs, values, lengths, terminated, temperature, gamma, d):
    """A loop over episodes i and real steps t of V(s_t) - sum_{i<m} gamma^i (R - T log p)_{t+i}
    - gamma^m V(s_{t+m}), m = min(d, steps left), V(s_{t+m}) = 0 at the end of a terminated
    episode; d = 0 runs to the end.  Inputs indexed [episode, step] (numpy or torch, the latter
    keeping autograd); one residual per real step, in order."""
    residuals = []
    for i, length in enumerate(int(length) for length in lengths):
        for t in range(length):
            m = min(d or length, length - t)
            end_value = 0.0 if (t + m == length and terminated[i]) else values[i, t + m]
            soft = sum(
                gamma**k * (rewards[i, t + k] - temperature * log_probs[i, t + k]) for k in range(m)
            )
            residuals.append(values[i, t] - soft - gamma**m * end_value)
    return residuals


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.floats(0.5, 1), temperatures, st.integers(0, 10))
def test_value_loss_matches_a_step_by_step_path_consistency(seed, gamma, temperature, d):
    """Random (off-optimum) inputs against step_by_step_residuals."""
    rng = np.random.default_rng(seed)
    count, steps = 6, 7
    lengths = rng.integers(1, steps + 1, count)
    mask = torch.as_tensor(np.arange(steps) < lengths[:, None])
    rewards, values = rng.normal(size=(count, steps)), rng.normal(size=(count, steps + 1))
    log_probs, terminated = -rng.exponential(size=(count, steps)), rng.random(count) < 0.5
    residuals = step_by_step_residuals(
        rewards, log_probs, values, lengths, terminated, temperature, gamma, d
    )
    loss = pa.value_loss(
        torch.as_tensor(rewards),
        torch.as_tensor(log_probs),
        torch.as_tensor(values),
        mask,
        torch.as_tensor(terminated),
        temperature,
        gamma,
        d,
    ).item()
    assert loss == pytest.approx(np.mean(np.square(residuals)), rel=1e-9)


@pytest.mark.parametrize("path_length", [0, 1, 3])
def test_value_loss_gradient_reaches_every_value_of_the_path_as_the_step_by_step_one(path_length):
    """Off the optimum, V's gradient is that of the step-by-step residuals, the bootstrap
    V(s_{t+m}) included (PCL trains V at both ends of a path; a detached end value passes
    every test that checks only the loss or the optimum, where the gradient is 0 anyway)."""
    generator = torch.Generator().manual_seed(path_length)
    rewards = torch.randn(3, 2, 6, generator=generator, dtype=torch.float64)  # (G, K, steps)
    lengths = torch.tensor([[6, 4], [5, 6], [2, 6]])
    mask = torch.arange(6) < lengths[..., None]
    log_probs = -torch.rand(3, 2, 6, generator=generator, dtype=torch.float64)
    values = torch.randn(3, 2, 7, generator=generator, dtype=torch.float64).requires_grad_()
    terminated = torch.tensor([[True, False], [True, True], [False, True]])
    loss = pa.value_loss(rewards, log_probs, values, mask, terminated, 0.3, 0.9, path_length)
    got = torch.autograd.grad(loss, values)[0]
    flat = [x.reshape(6, -1) for x in (rewards, log_probs, values)]  # (episodes, steps)
    residuals = step_by_step_residuals(
        *flat, lengths.flatten(), terminated.flatten(), 0.3, 0.9, path_length
    )
    wanted = torch.autograd.grad(torch.stack(residuals).square().mean(), values)[0]
    assert torch.allclose(got, wanted, rtol=1e-10, atol=1e-12)


def test_value_loss_finite_at_extremes():
    env = tree_env.TreeEnv(4, 3, 7, 0.3)
    for temperature in (1e-3, 1e3):
        rewards, log_probs, values, mask, terminated, _ = optimal_batch(env, temperature, 0.99, 1)
        rewards = torch.where(mask, rewards * 1e4, rewards).float()
        log_probs = log_probs.float().requires_grad_()
        values = values.float().requires_grad_()
        loss = pa.value_loss(rewards, log_probs, values, mask, terminated, temperature, 0.99)
        loss.backward()
        assert torch.isfinite(loss) and loss > 0
        assert torch.isfinite(log_probs.grad).all() and torch.isfinite(values.grad).all()


@pytest.mark.parametrize("path_length", [0, 1, 3])
def test_value_loss_lowers_every_taken_log_prob_while_v_overestimates(path_length):
    """The LunarLander collapse (docs/experiments.md, "Why value collapses"): while V sits above
    every soft return, the loss is lowered by making each taken action less likely, since -T log p
    is unbounded above; only the value net's own step size keeps the policy from doing so first."""
    generator = torch.Generator().manual_seed(path_length)
    rewards = -5 * torch.rand(3, 2, 6, generator=generator, dtype=torch.float64)
    log_probs = (-torch.rand(3, 2, 6, generator=generator, dtype=torch.float64)).requires_grad_()
    mask = torch.arange(6) < torch.tensor([[6, 4], [5, 6], [2, 6]])[..., None]
    values = torch.full((3, 2, 7), 100.0, dtype=torch.float64)  # far above any soft return
    terminated = torch.tensor([[True, False], [True, True], [False, True]])
    pa.value_loss(rewards, log_probs, values, mask, terminated, 0.1, 0.99, path_length).backward()
    assert (log_probs.grad[mask] > 0).all()  # gradient descent lowers every taken log p
    assert (log_probs.grad[~mask] == 0).all()


@pytest.mark.parametrize("path_length", [0, 1, 3])
def test_centred_value_loss_leaves_v_alone_and_centres_the_residuals_over_the_batch(path_length):
    """--centre-residuals: the loss's value and its gradient in the values are the plain loss's
    (bitwise), and the log-probs' gradient is sum_t 2 (r_t - mean r) dr_t / n, the mean over the
    whole batch's real steps (not per episode), with r_t from step_by_step_residuals.  Padded
    log-probs hold nan."""
    generator = torch.Generator().manual_seed(path_length)
    rewards = torch.randn(3, 2, 6, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([[6, 4], [5, 6], [2, 6]])
    mask = torch.arange(6) < lengths[..., None]
    log_probs = -torch.rand(3, 2, 6, generator=generator, dtype=torch.float64)
    log_probs = torch.where(mask, log_probs, torch.nan).requires_grad_()
    values = torch.randn(3, 2, 7, generator=generator, dtype=torch.float64).requires_grad_()
    terminated = torch.tensor([[True, False], [True, True], [False, True]])
    temperature, gamma = 0.3, 0.9

    def loss_and_gradients(centred):
        loss = pa.value_loss(rewards, log_probs, values, mask, terminated, temperature, gamma,
                             path_length, centred=centred)  # fmt: skip
        return (loss, *torch.autograd.grad(loss, (log_probs, values)))

    episodes = [x.reshape(6, -1) for x in (rewards, log_probs, values)]  # views: autograd kept
    residuals = torch.stack(
        step_by_step_residuals(
            *episodes, lengths.flatten(), terminated.flatten(), temperature, gamma, path_length
        )  # fmt: skip
    )
    # d/dlogp of sum (r - mean r)^2 / n is sum 2 (r_t - mean r)(dr_t - d mean r) / n, and the
    # second part vanishes because the centred residuals sum to 0.
    wanted = torch.autograd.grad((residuals - residuals.mean()).square().mean(), log_probs)[0]
    plain, centred = loss_and_gradients(False), loss_and_gradients(True)
    assert torch.equal(plain[0], centred[0]) and torch.equal(plain[2], centred[2])
    assert torch.allclose(centred[1], wanted, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(plain[1], centred[1])
    assert torch.isfinite(centred[0]) and torch.equal(
        centred[1][~mask], torch.zeros_like(wanted[~mask])
    )


# ---- ERR advantages ------------------------------------------------------------------------------


@SETTINGS
@given(grouped_batches())
def test_err_group_advantage_is_exactly_zero_at_boltzmann(batch):
    rewards, log_probs, mask, temperature, _ = batch
    advantages = pa.group_advantages(rewards, log_probs, mask, temperature)
    scale = scale_of(rewards, mask, temperature) * temperature
    assert advantages[mask].abs().max() <= 1e-9 * scale


@SETTINGS
@given(
    trees,
    temperatures,
    gammas,
    st.floats(0, 1),
    st.one_of(st.none(), st.integers(0, 99)),
    st.sampled_from([float("nan"), 7.0]),
)
def test_err_gae_advantage_zero_with_exact_soft_values(
    env, temperature, gamma, gae_lambda, truncate_seed, after_end
):
    """With V = V* and pi = pi* of the discounted soft MDP, every TD error of the ERR reward is 0,
    so is every advantage, and the soft return equals V*.  After termination nothing is
    bootstrapped: V at that index holds garbage (nan or a number), and must not matter."""
    rewards, log_probs, values, mask, terminated, _ = optimal_batch(
        env, temperature, gamma, truncate_seed
    )
    ends = mask.sum(-1)
    values[terminated] = values[terminated].index_put(
        (torch.arange(int(terminated.sum())), ends[terminated]), torch.tensor(after_end, dtype=F64)
    )
    advantages, soft_returns = pa.soft_advantages(
        rewards, log_probs, values, mask, terminated, temperature, gamma, gae_lambda
    )
    scale = 1 + values.nan_to_num().abs().max().item() + 10 / temperature
    assert advantages[mask].abs().max() <= 1e-9 * scale
    assert torch.allclose(soft_returns[mask], values[..., :-1][mask], atol=1e-9 * scale)


def test_group_advantage_favours_the_higher_trajectory_value():
    """V' = R - T log p: the better-rewarded, or the less probable at equal reward, gets A > 0."""
    rewards = torch.tensor([[[1.0], [0.0]], [[0.0], [0.0]]], dtype=F64)
    log_probs = torch.tensor([[[-1.0], [-1.0]], [[-0.1], [-2.0]]], dtype=F64)
    mask = torch.ones_like(rewards, dtype=torch.bool)
    advantages = pa.group_advantages(rewards, log_probs, mask, 0.5)[..., 0]
    assert advantages[0, 0] > 0 > advantages[0, 1] and advantages[1, 1] > 0 > advantages[1, 0]


def reference_gae(rewards, values, lengths, terminated, gamma, lam):
    """Textbook GAE, one episode at a time, as in CleanRL."""
    out = np.zeros_like(rewards)
    for i, length in enumerate(lengths):
        last = 0.0
        for t in reversed(range(length)):
            next_value = 0.0 if (t == length - 1 and terminated[i]) else values[i, t + 1]
            delta = rewards[i, t] + gamma * next_value - values[i, t]
            last = delta + gamma * lam * last
            out[i, t] = last
    return out


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.floats(0.5, 1), st.floats(0, 1))
def test_err_at_zero_temperature_is_plain_ppo(seed, gamma, lam):
    rng = np.random.default_rng(seed)
    count, steps = 5, 9
    lengths = rng.integers(1, steps + 1, count)
    mask = torch.as_tensor(np.arange(steps) < lengths[:, None])
    rewards, values = rng.normal(size=(count, steps)), rng.normal(size=(count, steps + 1))
    terminated = rng.random(count) < 0.5
    log_probs = torch.as_tensor(-rng.exponential(size=(count, steps)))
    assert torch.equal(
        pa.err_rewards(torch.as_tensor(rewards), log_probs, 0.0), torch.as_tensor(rewards)
    )
    advantages, returns = pa.soft_advantages(
        torch.as_tensor(rewards),
        log_probs,
        torch.as_tensor(values),
        mask,
        torch.as_tensor(terminated),
        0.0,
        gamma,
        lam,
    )
    expected = reference_gae(rewards, values, lengths, terminated, gamma, lam)
    assert np.allclose(advantages[mask].numpy(), expected[mask.numpy()], atol=1e-10)
    assert np.allclose(returns[mask].numpy(), (expected + values[:, :-1])[mask.numpy()], atol=1e-10)


# ---- PPO's clipped surrogate ---------------------------------------------------------------------


# (ratio, advantage) -> the surrogate min(r A, clip(r, 0.8, 1.2) A) and its derivative in log p,
# by hand: where the clipped term is the smaller, the derivative is 0; elsewhere it is r A.
CLIPPED_CASES = [
    (1.5, 2.0, 2.4, 0.0),  # r > 1 + eps, A > 0: clipped (1.2 * 2), no gradient
    (1.5, -2.0, -3.0, -3.0),  # r > 1 + eps, A < 0: r A is the smaller
    (0.5, 2.0, 1.0, 1.0),  # r < 1 - eps, A > 0: r A is the smaller
    (0.5, -2.0, -1.6, 0.0),  # r < 1 - eps, A < 0: clipped (0.8 * -2), no gradient
    (1.1, 2.0, 2.2, 2.2),  # inside [1 - eps, 1 + eps]: r A either way
    (1.1, -2.0, -2.2, -2.2),
]


def test_clipped_policy_loss_by_hand():
    """-mean(min(r A, clip(r) A)) at eps = 0.2 for A > 0 and A < 0 with r below, inside and
    above [0.8, 1.2]: each case's value, and its gradient in log p, which is 0 exactly where PPO
    stops pushing (r > 1 + eps with A > 0, r < 1 - eps with A < 0), r A / n elsewhere."""
    ratios, advantages, surrogates, slopes = (
        torch.tensor(column, dtype=F64) for column in zip(*CLIPPED_CASES, strict=True)
    )
    old_log_probs = torch.tensor([-0.3, -1.0, -2.0, -0.1, -0.7, -1.5], dtype=F64)
    log_probs = (old_log_probs + ratios.log()).requires_grad_()
    loss = pa.clipped_policy_loss(log_probs, old_log_probs, advantages, 0.2)
    (gradient,) = torch.autograd.grad(loss, log_probs)
    n = len(CLIPPED_CASES)
    assert loss.item() == pytest.approx(-surrogates.sum().item() / n, abs=1e-12)  # 0.2
    assert torch.allclose(gradient, -slopes / n, rtol=0, atol=1e-12)
    assert (gradient[[0, 3]] == 0).all() and (gradient[[1, 2, 4, 5]] != 0).all()
    for i in range(n):  # each case alone: the mean cannot hide one case behind another
        alone = pa.clipped_policy_loss(log_probs[i : i + 1], old_log_probs[i : i + 1],
                                       advantages[i : i + 1], 0.2)  # fmt: skip
        assert alone.item() == pytest.approx(-surrogates[i].item(), abs=1e-12), CLIPPED_CASES[i]


# ==== 3. Networks and the seed-grouped sampler ====================================================


class StepAudit(gym.Wrapper):
    """Counts env steps and fails on a step after the episode ended."""

    def reset(self, **kwargs):
        self.steps, self.done = 0, False
        return super().reset(**kwargs)

    def step(self, action):
        assert not self.done, "stepped after the episode ended"
        self.steps += 1
        result = super().step(action)
        self.done = result[2] or result[3]
        return result


def batch_agent(env_id="CartPole-v1"):
    """The agent make_batch samples with (same init every call): with V and a normaliser."""
    env = gym.make(env_id)
    return pa.Agent(env.observation_space.shape[0], env.action_space, 16, True, True)


def group_seeds(groups, seed):
    """The reset seed of each group of make_batch(groups=groups, seed=seed)."""
    return np.random.default_rng(seed).integers(0, 2**31, groups)


def make_batch(env_id="CartPole-v1", groups=3, size=4, seed=0, agent=None, **kwargs):
    envs = [StepAudit(gym.make(env_id, **kwargs)) for _ in range(groups * size)]
    agent = batch_agent(env_id) if agent is None else agent
    seeds = group_seeds(groups, seed)
    batch = pa.sample_episodes(envs, agent, seeds, size, torch.Generator().manual_seed(seed))
    return envs, batch


# CartPole under a 20-step TimeLimit, make_batch(seed=2): of 12 episodes some are cut by the limit,
# some fall before it, and one falls at step 20 exactly (terminated and truncated at once).
SHORT_LIMIT = dict(seed=2, max_episode_steps=20)


def replay_episodes(batch, env_id="CartPole-v1", seed=0, **kwargs):
    """Each episode of a make_batch(env_id, seed=seed, **kwargs) batch stepped again in a fresh
    env: its group's seed, its recorded actions.  Per episode, in batch order: the observations
    (reset's, then each env.step's) as float32, and the last step's terminated and truncated."""
    groups, size = batch.mask.shape[:2]
    episodes = []
    for g, group_seed in enumerate(group_seeds(groups, seed)):
        for k in range(size):
            env = gym.make(env_id, **kwargs)
            observations = [env.reset(seed=int(group_seed))[0]]
            for action in batch.actions[g, k][batch.mask[g, k]].tolist():
                obs, _, terminated, truncated, _ = env.step(action)
                observations.append(obs)
            stacked = torch.as_tensor(np.array(observations), dtype=torch.float32)
            episodes.append((stacked, terminated, truncated))
    return episodes


def test_sampler_groups_share_seed_and_counts_steps_exactly():
    envs, batch = make_batch()
    first = batch.observations[:, :, 0]  # (G, K, obs_dim)
    assert torch.equal(first, first[:, :1].expand_as(first))  # same seed inside a group
    assert not torch.equal(first[0, 0], first[1, 0])  # fresh seed per group
    lengths = batch.mask.sum(-1).flatten().tolist()
    assert lengths == [env.steps for env in envs]
    assert int(batch.mask.sum()) == sum(env.steps for env in envs)
    assert all(env.done for env in envs)
    # the mask is a prefix and episodes differ in length (terminated vs truncated: see below)
    steps = batch.mask.shape[-1]
    assert torch.equal(batch.mask, torch.arange(steps) < batch.mask.sum(-1, keepdim=True))
    assert len(set(lengths)) > 1


def test_sampler_truncation_keeps_bootstrap_observation():
    """On a batch of mixed lengths where a TimeLimit cuts some episodes, every stored observation
    up to index = length equals a replay's (same seed, same actions), and so does the one at
    index = length, what V bootstraps from after a truncation: the state env.step returned at
    the cutting step, not a reset observation (the autoreset bug) nor the one before it."""
    _, batch = make_batch(**SHORT_LIMIT)
    replayed = replay_episodes(batch, **SHORT_LIMIT)
    lengths = batch.mask.sum(-1).flatten().tolist()
    assert len(set(lengths)) > 1 and any(cut and not fell for _, fell, cut in replayed)
    stored = batch.observations.flatten(0, 1)  # (episodes, steps + 1, obs_dim)
    for i, (length, (observations, _, _)) in enumerate(zip(lengths, replayed, strict=True)):
        assert len(observations) == length + 1
        assert torch.equal(stored[i, : length + 1], observations), i


def test_sampler_terminated_is_true_for_terminations_only_not_time_limit_truncations():
    """Batch.terminated on one batch holding both endings: True exactly for the episodes whose
    last env.step (replayed) returned terminated, the one that fell at the limit's step included;
    False for those the TimeLimit cut (V bootstraps from their last observation)."""
    _, batch = make_batch(**SHORT_LIMIT)
    replayed = replay_episodes(batch, **SHORT_LIMIT)
    fell = [terminated for _, terminated, _ in replayed]
    cut_only = [truncated and not terminated for _, terminated, truncated in replayed]
    assert all(a or b for a, b in zip(fell, cut_only, strict=True))  # every episode ended
    assert any(fell) and any(cut_only)  # both kinds of ending in this one batch
    assert any(terminated and truncated for _, terminated, truncated in replayed)
    assert batch.terminated.flatten().tolist() == fell


def test_sampler_same_seed_same_batch_other_seed_other_batch():
    _, first = make_batch(seed=3)
    _, again = make_batch(seed=3)
    _, other = make_batch(seed=4)
    assert torch.equal(first.observations, again.observations)
    assert torch.equal(first.actions, again.actions)
    assert first.observations.shape != other.observations.shape or not torch.equal(
        first.observations, other.observations
    )


def test_sampler_behaviour_log_probs_match_the_policy():
    agent = pa.Agent(4, gym.spaces.Discrete(2), 16, True, True)
    envs = [gym.make("CartPole-v1") for _ in range(4)]
    batch = pa.sample_episodes(envs, agent, [1, 2], 2, torch.Generator().manual_seed(0))
    recomputed = pa.taken_log_probs(agent, batch)
    assert torch.allclose(recomputed[batch.mask].float(), batch.log_probs[batch.mask], atol=1e-6)


def test_tree_start_follows_the_seed_and_no_seed_groups_gives_each_episode_its_own():
    env = tree_env.TreeEnv(depth=3, num_starts=3)
    ending = tree_env.TreeEnv(depth=3, num_starts=3, early_end=1.0)  # ends after one step...
    assert all(ending.children[start] for start in range(3))  # ...but never at a start
    assert [int(env.reset(seed=s)[0].argmax()) for s in range(6)] == [0, 1, 2, 0, 1, 2]
    assert {int(env.reset()[0].argmax()) for _ in range(50)} == {0, 1, 2}  # from np_random
    envs = [tree_env.TreeEnv(depth=3, num_starts=3) for _ in range(12)]
    agent, generator = (
        pa.Agent(env.num_nodes, gym.spaces.Discrete(3), 16, False, False),
        torch.Generator(),
    )
    shared = pa.sample_episodes(envs, agent, np.arange(3), 4, generator)  # one seed per group
    own = pa.sample_episodes(envs, agent, np.arange(12), 4, generator)  # one per episode
    assert shared.observations[:, :, 0].argmax(-1).tolist() == [[0] * 4, [1] * 4, [2] * 4]
    assert own.observations[:, :, 0].argmax(-1).tolist() == [
        [0, 1, 2, 0],
        [1, 2, 0, 1],
        [2, 0, 1, 2],
    ]


def test_networks_start_orthogonal_with_their_gains():
    """Orthogonal init, gain sqrt(2) in the hidden layers (for tanh), 0.01 at the policy's output
    (a near-uniform first policy), 1 at V's: W^T W = gain^2 I where W has orthonormal columns."""
    agent = pa.Agent(4, gym.spaces.Discrete(2), 64, True, False)

    def gram(layer, columns=True):  # W^T W (orthonormal columns) or W W^T (orthonormal rows)
        weight = layer.weight.detach().double()
        return weight.T @ weight if columns else weight @ weight.T

    identity = torch.eye
    assert torch.allclose(gram(agent.policy[0]), 2 * identity(4, dtype=F64), atol=1e-5)
    assert torch.allclose(gram(agent.policy[2]), 2 * identity(64, dtype=F64), atol=1e-5)
    assert torch.allclose(gram(agent.policy[4], False), 1e-4 * identity(2, dtype=F64), atol=1e-9)
    assert torch.allclose(gram(agent.value[4], False), identity(1, dtype=F64), atol=1e-5)


def test_normalizer_scales_to_zero_mean_unit_std_and_clips_at_ten():
    data = torch.tensor([100, -3, 0.5]) + torch.tensor([5, 0.1, 2]) * torch.randn(
        1000, 3, generator=torch.Generator().manual_seed(0)
    )
    normalizer = pa.RunningNormalizer(3)
    normalizer.update(data)
    scaled = normalizer(data.double())
    assert scaled.mean(0).abs().max() < 1e-8
    assert torch.allclose(scaled.std(0, unbiased=False), torch.ones(3, dtype=F64), atol=1e-5)
    far = normalizer(torch.tensor([[1e6, -1e6, 0.5]], dtype=F64))[0]
    assert far[:2].tolist() == [10.0, -10.0] and abs(far[2].item()) < 0.1


def test_both_networks_see_the_normalised_observations():
    """obs_norm: policy_outputs(x) and values(x) are those of the same networks without it at
    (x - mean) / std; the normaliser's statistics differ enough from (0, 1) to tell."""
    space = gym.spaces.Discrete(2)
    normed, plain = (pa.Agent(4, space, 16, True, norm, seed=5) for norm in (True, False))
    centre, scale = torch.tensor([100, -3, 0.5, 7]), torch.tensor([5, 0.1, 2, 1])
    generator = torch.Generator().manual_seed(1)
    normed.normalizer.update(centre + scale * torch.randn(500, 4, generator=generator))
    x = centre + scale * torch.randn(20, 4, generator=generator)
    by_hand = ((x - normed.normalizer.mean) / normed.normalizer.var.sqrt()).float()
    with torch.no_grad():
        assert torch.allclose(normed.values(x), plain.values(by_hand), atol=1e-5)
        assert torch.allclose(normed.policy_outputs(x), plain.policy_outputs(by_hand), atol=1e-5)
        assert not torch.allclose(normed.values(x), plain.values(x), atol=1e-2)


@pytest.mark.slow
def test_training_feeds_the_normaliser_each_batchs_real_observations_and_evaluation_none(
    tmp_path, monkeypatch
):
    """After one iteration the normaliser has seen exactly the batch's real states s_0 ... s_{L-1}
    (not the state after the last step, not padding), and evaluating changed nothing."""
    batches, real = [], pa.sample_episodes

    def kept(*args, **kwargs):
        batches.append(real(*args, **kwargs))
        return batches[-1]

    monkeypatch.setattr(pa, "sample_episodes", kept)
    agent, experiment = pa.train(config(**{**SMOKE, "iterations": 1}), tmp_path)
    seen = batches[0].observations[..., :-1, :][batches[0].mask].double()
    assert agent.normalizer.count.item() == len(seen) == experiment["summary"]["env_steps"]
    assert torch.allclose(agent.normalizer.mean, seen.mean(0), rtol=0, atol=1e-12)


def test_categorical_greedy_is_the_most_likely_action_and_sampling_follows_softmax():
    agent = pa.Agent(4, gym.spaces.Discrete(3), 16, False, False)
    with torch.no_grad():
        agent.policy[-1].weight.zero_()
        agent.policy[-1].bias.copy_(torch.tensor([0.0, 2.0, 1.0]))
    obs = torch.randn(2000, 4, generator=torch.Generator().manual_seed(0))
    greedy = agent.sample(obs, greedy=True)[0]
    assert greedy.eq(1).all() and agent.act(np.zeros(4), greedy=True) == 1
    drawn = agent.sample(obs, torch.Generator().manual_seed(1))[0]
    frequencies = torch.bincount(drawn, minlength=3) / len(drawn)
    assert torch.allclose(frequencies, torch.softmax(torch.tensor([0.0, 2.0, 1.0]), 0), atol=0.03)


def test_mean_entropy_is_over_real_steps_only():
    entropies = torch.tensor([[[1.0, 1.0, 1.0], [4.0, 9.0, 9.0]]])  # padding holds 9s
    mask = torch.tensor([[[True, True, True], [True, False, False]]])
    empty = torch.zeros(1, 2, 3)
    batch = pa.Batch(empty, empty, empty, empty, entropies, mask, torch.zeros(1, 2, dtype=bool))
    assert batch.mean_entropy == 1.75  # (1 + 1 + 1 + 4) / 4


@SETTINGS
@given(st.lists(st.integers(1, 50), min_size=1, max_size=6), st.integers(0, 2**32 - 1))
def test_normalizer_merge_equals_pooled_mean_and_variance(chunks, seed):
    rng = np.random.default_rng(seed)
    data = [rng.normal(rng.normal(0, 5, 3), rng.uniform(0.1, 10, 3), (n, 3)) for n in chunks]
    normalizer = pa.RunningNormalizer(3)
    for chunk in data:
        normalizer.update(torch.as_tensor(chunk))
    pooled = np.concatenate(data)
    assert normalizer.count.item() == len(pooled)
    assert np.allclose(normalizer.mean.numpy(), pooled.mean(0), rtol=1e-10, atol=1e-10)
    assert np.allclose(normalizer.var.numpy(), pooled.var(0), rtol=1e-9, atol=1e-10)


# ==== 4. Update steps, one per algorithm ==========================================================


@pytest.mark.slow
@pytest.mark.parametrize(  # 0 and 5 >= 3 steps: every step; path lengths d = 0 (whole) to 3
    "policy_steps, path_length", [(0, 0), (1, 2), (2, 1), (5, 3)]
)
def test_value_policy_steps_move_v_every_step_and_the_policy_in_the_last_ones(
    policy_steps, path_length
):
    """--policy-steps K of N: V takes all N steps, the policy only the last K (Adam's per-parameter
    step counts), and the update is N explicit steps of which the first N - K see detached
    log-probs, so the order (V alone first) is checked too.  K = 0 means every step.  Each step
    is on value_loss at the run's --path-length d (CartPole's random episodes outlast d)."""
    agent = pa.Agent(4, gym.spaces.Discrete(2), 16, True, True, seed=1)
    envs = [gym.make("CartPole-v1") for _ in range(4)]
    batch = pa.sample_episodes(envs, agent, [1, 2], 2, torch.Generator().manual_seed(0))
    cfg = config(algo="value", optim_steps=3, policy_steps=policy_steps, path_length=path_length)

    def fresh():
        copy = pa.Agent(4, gym.spaces.Discrete(2), 16, True, True, seed=1)
        nets = [copy.policy.parameters(), copy.value.parameters()]
        return copy, torch.optim.Adam([dict(params=params, lr=1e-2) for params in nets])

    moved, optimizer = fresh()
    pa.update_value(moved, optimizer, batch, 0.5, cfg, None)
    first = [next(moved.policy.parameters()), next(moved.value.parameters())]
    assert [int(optimizer.state[p]["step"]) for p in first] == [min(policy_steps or 3, 3), 3]
    expected, expected_optimizer = fresh()
    for step in range(3):
        log_probs = pa.taken_log_probs(expected, batch)
        log_probs = log_probs.detach() if step < 3 - min(policy_steps or 3, 3) else log_probs
        values = expected.values(batch.observations)
        loss = pa.value_loss(batch.rewards, log_probs, values, batch.mask, batch.terminated,
                             0.5, cfg.gamma, path_length)  # fmt: skip
        pa.optimizer_step(expected_optimizer, loss, list(expected.parameters()), 0.0)
    for got, wanted in zip(moved.parameters(), expected.parameters(), strict=True):
        assert torch.equal(got, wanted)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grouped", "value", "err"])
def test_update_starts_from_the_behaviour_log_probs(tmp_path, monkeypatch, algo):
    """After the first update the normaliser holds real statistics; the next batch's behaviour
    log-probs must be those the update recomputes before its first step (the same policy)."""
    seen = []

    def checked(agent, optimizer, batch, *args):
        recomputed = pa.taken_log_probs(agent, batch)
        seen.append(
            (
                agent.normalizer.count.item(),
                (recomputed - batch.log_probs)[batch.mask].abs().max().item(),
            )
        )
        return update(agent, optimizer, batch, *args)

    update = pa.UPDATES[algo]
    monkeypatch.setitem(pa.UPDATES, algo, checked)
    train(config(algo=algo, **SMOKE), tmp_path)
    assert seen[0][0] == 0 and seen[1][0] > 0  # the second batch saw a fitted normaliser
    assert all(difference < 1e-5 for _, difference in seen)


def sharpened(agent, factor):
    """The agent with its last policy layer scaled by factor: the init is nearly uniform."""
    with torch.no_grad():
        agent.policy[-1].weight.mul_(factor)
    return agent


def two_group_adam(agent, policy_lr=1e-3, value_lr=3e-3):
    """The optimizer train builds: Adam, one group for the policy net, one for V."""
    nets = [(agent.policy, policy_lr), (agent.value, value_lr)]
    return torch.optim.Adam([dict(params=net.parameters(), lr=lr) for net, lr in nets])


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, 0.3])
def test_update_err_is_one_plain_ppo_update_on_the_err_rewards(temperature):
    """One update_err call at T moves the agent exactly as a hand-written PPO update from the
    same start: textbook GAE (reference_gae) on the ERR rewards R - T log p_behaviour (at T = 0
    the env's rewards: plain PPO), V bootstrapped after a
    truncation and not after a termination; the clipped surrogate; 0.5 * MSE of V to the GAE
    returns; no advantage normalisation; the grad-norm clip; minibatches drawn from a generator
    in the same state.  The batch has both endings and was sampled by a sharper policy, so that
    ratios start away from 1 and PPO's clip engages, as does the grad-norm clip."""
    _, batch = make_batch(agent=sharpened(batch_agent(), 100), **SHORT_LIMIT)
    cfg = config(algo="err", optim_steps=2, minibatches=3, gamma=0.9, gae_lambda=0.8,
                 ppo_clip=0.2, max_grad_norm=0.5, entropy_bonus=0.0)  # fmt: skip
    moved = batch_agent()
    pa.update_err(moved, two_group_adam(moved), batch, temperature, cfg,
                  torch.Generator().manual_seed(5))  # fmt: skip

    expected = batch_agent()
    optimizer, params = two_group_adam(expected), list(expected.parameters())
    mask = batch.mask.flatten(0, 1)  # (episodes, steps)
    with torch.no_grad():
        values = expected.values(batch.observations).flatten(0, 1).double()
    behaviour = torch.where(batch.mask, batch.log_probs, 0).flatten(0, 1).double()
    soft_rewards = batch.rewards.flatten(0, 1).double() - temperature * behaviour
    advantages = reference_gae(soft_rewards.numpy(), values.numpy(),
                               mask.sum(-1).numpy(), batch.terminated.flatten().numpy(),
                               cfg.gamma, cfg.gae_lambda)  # fmt: skip
    advantages = torch.as_tensor(advantages)[mask]
    returns = (advantages + values[:, :-1][mask]).float()
    advantages = advantages.float()
    obs = batch.observations.flatten(0, 1)[:, :-1][mask]
    actions, old_log_probs = batch.actions.flatten(0, 1)[mask], batch.log_probs.flatten(0, 1)[mask]
    rng, norms, outside = torch.Generator().manual_seed(5), [], []
    for _ in range(cfg.optim_steps):
        for idx in torch.randperm(len(actions), generator=rng).chunk(cfg.minibatches):
            log_probs = (
                expected.head.log_probs(expected.policy_outputs(obs[idx]))
                .gather(-1, actions[idx, None])
                .squeeze(-1)
            )
            ratio = (log_probs - old_log_probs[idx]).exp()
            outside.append(((ratio - 1).abs() > 0.2).sum().item())
            surrogate = torch.minimum(ratio * advantages[idx],
                                      ratio.clamp(0.8, 1.2) * advantages[idx])  # fmt: skip
            v_loss = 0.5 * (expected.values(obs[idx]) - returns[idx]).square().mean()
            optimizer.zero_grad()
            (v_loss - surrogate.mean()).backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, 0.5)))
            optimizer.step()
    assert max(norms) > 0.5 and sum(outside) > 0  # both clips change something
    for got, wanted in zip(moved.parameters(), expected.parameters(), strict=True):
        assert torch.allclose(got, wanted, rtol=0, atol=1e-6)


def test_approximate_kl_is_the_kl_on_samples_in_the_behaviour_policys_proportions():
    """k3, E[r - 1 - log r] with r = pi / behaviour, averaged over samples drawn in exactly the
    behaviour policy's proportions, is KL(behaviour || pi) (float64), and 0 when pi = behaviour."""
    behaviour = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    pi = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    samples = torch.tensor([0, 0, 1, 2])  # behaviour's proportions exactly
    kl = pa.approximate_kl(pi.log()[samples], behaviour.log()[samples])
    assert kl.item() == pytest.approx((behaviour * (behaviour / pi).log()).sum().item(), rel=1e-12)
    assert pa.approximate_kl(pi.log()[samples], pi.log()[samples]).item() == 0
    # a stopping rule's measure: no graph is built through the policy's log-probs
    log_pi = pi.log().requires_grad_()
    assert not pa.approximate_kl(log_pi[samples], behaviour.log()[samples]).requires_grad


def test_target_kl_ends_a_batchs_epochs_once_pi_has_moved_that_far():
    """--target-kl: a target far below one Adam step's KL ends update_err after its first step
    (the next minibatch measures more than 1.5x it); 0 (off), or a target no step reaches, takes
    every epoch's every minibatch."""
    _, batch = make_batch(**SHORT_LIMIT)

    def steps(target_kl):
        agent = batch_agent()
        optimizer = two_group_adam(agent)
        cfg = config(algo="err", optim_steps=3, minibatches=2, target_kl=target_kl)
        pa.update_err(agent, optimizer, batch, 0.05, cfg, torch.Generator().manual_seed(0))
        return max(int(state["step"]) for state in optimizer.state.values())

    assert steps(0.0) == 6 and steps(10.0) == 6 and steps(1e-12) == 1
    # SB3's margin: the stop is at 1.5 K, not at K.  After one step the second minibatch measures
    # KL k; a target of k / 1.25 (1.5 K = 1.2 k) takes that minibatch, k / 1.6 (1.5 K < k) stops.
    agent, cfg = batch_agent(), config(algo="err", optim_steps=3, minibatches=2, target_kl=1e-12)
    pa.update_err(agent, two_group_adam(agent), batch, 0.05, cfg, torch.Generator().manual_seed(0))
    mask, rng = batch.mask, torch.Generator().manual_seed(0)
    second = torch.randperm(int(mask.sum()), generator=rng).chunk(2)[1]
    obs, actions = batch.observations[..., :-1, :][mask][second], batch.actions[mask][second]
    with torch.no_grad():
        log_probs, _ = agent.log_prob_and_entropy(obs, actions)
    moved = pa.approximate_kl(log_probs, batch.log_probs[mask][second]).item()
    assert moved > 0 and steps(moved / 1.25) > 1 and steps(moved / 1.6) == 1


@pytest.mark.slow
def test_entropy_bonus_steps_the_policy_up_the_entropy_gradient():
    """--entropy-bonus c in update_err: one plain SGD step (one epoch, one minibatch, no clip)
    with c lands exactly lr * c * grad H above the step with c = 0 from the same start and the
    same minibatch order, H the mean entropy of pi over the batch's real states; V's step is the
    same; and the policy ends more entropic on those states than with c = 0."""
    sharp = sharpened(batch_agent(), 100)  # near uniform, the entropy's gradient is ~0
    _, batch = make_batch(agent=sharp, **SHORT_LIMIT)
    obs = batch.observations[..., :-1, :][batch.mask]
    lr, bonus = 0.1, 0.5

    def entropy(agent):  # mean H(pi(.|s)) over the batch's real states, by hand
        log_pi = agent.head.log_probs(agent.policy_outputs(obs))
        return -(log_pi.exp() * log_pi).sum(-1).mean()

    def updated(entropy_bonus):
        agent = copy.deepcopy(sharp)
        cfg = config(algo="err", optim_steps=1, minibatches=1, max_grad_norm=0.0,
                     entropy_bonus=entropy_bonus)  # fmt: skip
        optimizer = torch.optim.SGD(agent.parameters(), lr=lr)
        pa.update_err(agent, optimizer, batch, 0.0, cfg, torch.Generator().manual_seed(1))
        return agent

    start = copy.deepcopy(sharp)
    gradients = torch.autograd.grad(entropy(start), list(start.policy.parameters()))
    without, with_bonus = updated(0.0), updated(bonus)
    for a, b, gradient in zip(without.policy.parameters(), with_bonus.policy.parameters(),
                              gradients, strict=True):  # fmt: skip
        assert torch.allclose(b - a, lr * bonus * gradient, rtol=1e-3, atol=1e-6)
    for a, b in zip(without.value.parameters(), with_bonus.value.parameters(), strict=True):
        assert torch.equal(a, b)
    assert max(gradient.abs().max().item() for gradient in gradients) > 1e-3
    with torch.no_grad():
        assert entropy(with_bonus) > entropy(without)


@pytest.mark.slow
def test_centre_residuals_update_takes_the_centred_loss_gradient():
    """update_value with --centre-residuals: one SGD step lands exactly where a hand step on
    value_loss(..., centred=True) lands, and the policy lands elsewhere than with the uncentred
    update (V's step is the same: centring changes only the log-probs' gradient)."""
    _, batch = make_batch(**SHORT_LIMIT)

    def updated(centre, by_hand=False):
        agent = batch_agent()
        cfg = config(algo="value", optim_steps=1, policy_steps=0, gamma=0.9, max_grad_norm=0.0,
                     centre_residuals=centre)  # fmt: skip
        optimizer = torch.optim.SGD(agent.parameters(), lr=0.1)
        if not by_hand:
            pa.update_value(agent, optimizer, batch, 0.5, cfg, None)
            return agent
        loss = pa.value_loss(batch.rewards, pa.taken_log_probs(agent, batch),
                             agent.values(batch.observations), batch.mask, batch.terminated, 0.5,
                             cfg.gamma, cfg.path_length, centred=True)  # fmt: skip
        pa.optimizer_step(optimizer, loss, list(agent.parameters()), 0.0)
        return agent

    centred, by_hand, plain = updated(True), updated(True, by_hand=True), updated(False)
    for got, wanted in zip(centred.parameters(), by_hand.parameters(), strict=True):
        assert torch.allclose(got, wanted, rtol=0, atol=1e-7)
    assert not all(
        torch.allclose(a, b, rtol=0, atol=1e-5)
        for a, b in zip(centred.policy.parameters(), plain.policy.parameters(), strict=True)
    )
    for a, b in zip(centred.value.parameters(), plain.value.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("trust_region", [0.0, 0.05])
def test_grouped_update_returns_the_first_value_of_the_loss_it_optimises(trust_region):
    """The history's `loss`: grouped_loss without the trust region, trust_region_loss inside it
    (whose first value is the squared step the targets ask for, not grouped_loss)."""
    _, batch = make_batch(groups=2, size=4)
    agent = batch_agent()
    cfg = config(trust_region=trust_region, optim_steps=2)
    with torch.no_grad():
        log_probs = pa.taken_log_probs(agent, batch)
        sums, lengths = pa.masked_sum(log_probs, batch.mask), batch.mask.sum(-1)
        targets = pa.trust_region_targets(sums, batch.returns, lengths, 0.2, trust_region)
        optimised = pa.trust_region_loss(sums, targets) if trust_region else None
        plain = pa.grouped_loss(batch.rewards, log_probs, batch.mask, 0.2)
    optimizer = torch.optim.Adam(agent.policy.parameters(), lr=1e-3)
    loss = pa.update_grouped(agent, optimizer, batch, 0.2, cfg, torch.Generator())
    assert loss == pytest.approx(float(optimised if trust_region else plain), rel=1e-6)
    assert not trust_region or abs(loss - float(plain)) > 1e-3 * float(plain)


@pytest.mark.slow
def test_the_trust_region_bounds_a_whole_batchs_move():
    """--trust-region eps: the targets are set once a batch, so 50 Adam steps fit them and stop
    there: no member's centred sum of log p moves by much more than eps nats a step of its
    episode (0.84 of the budget here); targets remade at every step reset the budget each time
    (11.6 times it).  The move must also use most of the budget, or the bound says nothing."""
    _, batch = make_batch(groups=2, size=4)
    agent, lengths = batch_agent(), batch.mask.sum(-1)
    cfg = config(trust_region=0.05, optim_steps=50)

    def centred_sums():
        sums = pa.masked_sum(pa.taken_log_probs(agent, batch), batch.mask).detach()
        return sums - sums.mean(dim=1, keepdim=True)

    before = centred_sums()
    optimizer = torch.optim.Adam(agent.policy.parameters(), lr=3e-3)
    pa.update_grouped(agent, optimizer, batch, 0.2, cfg, torch.Generator())
    used = ((centred_sums() - before).abs() / (0.05 * lengths)).max().item()
    assert 0.5 < used < 1.5


# ==== 5. Training loop ============================================================================


@pytest.mark.slow
@pytest.mark.parametrize("env", ["CartPole-v1", "LunarLander-v3"])
@pytest.mark.parametrize("algo", ["grouped", "value", "err"])
def test_smoke_run_records_and_checkpoints(tmp_path, env, algo):
    cfg = config(env, algo, **SMOKE)
    experiment = train(cfg, tmp_path)
    history, summary = experiment["history"], experiment["summary"]
    assert [r["iteration"] for r in history] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["eval_return"] is not None for r in history)
    assert history[0]["env_steps"] < history[1]["env_steps"] == summary["env_steps"]
    assert summary["error"] is None and set(summary["final_eval"]) == {"sampled", "greedy"}
    assert json.loads((tmp_path / "experiment.json").read_text()) == experiment
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert (checkpoint["env"], checkpoint["algo"], checkpoint["format_version"]) == (env, algo, 1)
    assert checkpoint["state"]["iteration"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["value", "err"])
def test_value_lr_is_the_value_nets_step_and_decays_with_lr(tmp_path, algo):
    """--lr steps the policy, --value-lr the value net (PCL's eta_pi, eta_v); --lr-decay scales
    both.  Adam moves a parameter by about its lr per step whatever the gradient's size, so a
    policy at lr 1e-7 barely moves while V at 1e-2 does."""
    cfg = config(algo=algo, **SMOKE, lr=1e-7, value_lr=1e-2, lr_decay=True)
    before = pa.make_agent(cfg, gym.make(cfg.env), with_value=True).state_dict()
    train(cfg, tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    after = checkpoint["agent"]

    def moved(net):
        return max((after[k] - before[k]).abs().max().item() for k in after if k.startswith(net))

    assert moved("policy.") < 1e-4 < 1e-3 < moved("value.")
    last = dict(iteration=cfg.iterations - 1, env_steps=0, wall_time=0.0)
    left = 1 - cfg.budget_progress(last)  # the factor of the last iteration
    lrs = [group["lr"] for group in checkpoint["optimizer"]["param_groups"]]
    assert lrs == pytest.approx([1e-7 * left, 1e-2 * left], rel=1e-12, abs=1e-15)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grouped", "value", "err"])
def test_same_seed_same_history_other_seed_other_history(tmp_path, algo):
    torch.use_deterministic_algorithms(False)  # train turns it on: a kernel without a
    runs = [  # deterministic form then raises, rather than change a seed's run
        train(config(algo=algo, seed=seed, **SMOKE), tmp_path / str(i))
        for i, seed in enumerate([5, 5, 6])
    ]
    first, again, other = (without_wall_time(run["history"]) for run in runs)
    assert first == again
    assert first != other
    assert runs[0]["summary"]["final_eval"] == runs[1]["summary"]["final_eval"]
    assert torch.are_deterministic_algorithms_enabled()


@pytest.mark.slow
def test_budgets_stop_a_run_after_the_iteration_that_spends_them(tmp_path):
    by_minutes = train(config(**{**SMOKE, "iterations": 5}, max_minutes=1e-9), tmp_path / "m")
    assert by_minutes["summary"]["iterations"] == 1 and by_minutes["summary"]["error"] is None
    assert by_minutes["summary"]["stopped_by"] == "time budget"
    by_steps = train(config(**{**SMOKE, "iterations": 50}, max_env_steps=300), tmp_path / "s")
    steps = [record["env_steps"] for record in by_steps["history"]]
    assert len(steps) > 1 and steps[-1] >= 300 > steps[-2]
    assert by_steps["summary"]["stopped_by"] == "env-step budget"
    # a budget spent exactly ends the run too: Tree-v0's episodes all take 4 steps, 16 a batch
    exactly = config("Tree-v0", **{**SMOKE, "iterations": 5}, env_kwargs={"early_end": 0.0},
                     max_env_steps=32)  # fmt: skip
    assert recorded(train(exactly, tmp_path / "e")["history"], "env_steps") == [16, 32]


@pytest.mark.slow
def test_the_last_iteration_is_evaluated_and_the_final_evaluation_has_its_own_episodes(
    tmp_path, monkeypatch
):
    """--eval-every 2 of 3 iterations: evaluated at 2 and at the last, 3; the final evaluation
    (stream 0, sampled and greedy) runs --final-eval-episodes envs, the others --eval-episodes."""
    calls, real = [], pa.evaluate

    def spied(agent, envs, cfg, stream, greedy=False, confirm=False):
        calls.append((stream, len(envs)))
        return real(agent, envs, cfg, stream, greedy, confirm)

    monkeypatch.setattr(pa, "evaluate", spied)
    cfg = config(**{**SMOKE, "iterations": 3, "eval_every": 2}, final_eval_episodes=5)
    history = train(cfg, tmp_path)["history"]
    assert [record["eval_return"] is not None for record in history] == [False, True, True]
    assert calls == [(2, 2), (3, 2), (0, 5), (0, 5)]


@pytest.mark.slow
def test_an_evaluation_exactly_at_the_threshold_solves(tmp_path, monkeypatch):
    """The threshold is reached at equality (gymnasium's 475 means >= 475), for the crossing and
    for its confirmation."""

    def at_the_threshold(agent, envs, *args, **kwargs):
        return np.full(len(envs), 475.0), 0.5

    monkeypatch.setattr(pa, "evaluate", at_the_threshold)
    experiment = train(config(**SMOKE), tmp_path)
    assert experiment["summary"]["solved_iteration"] == 1


# ---- evaluation, confirmation and their seeds ----------------------------------------------------


@pytest.mark.parametrize("budget", ["iterations", "max_env_steps", "max_minutes"])
def test_budget_progress_runs_from_0_to_1_over_the_budget_that_ends_the_run(budget):
    given = {"iterations": 10, "max_env_steps": 2000, "max_minutes": 2.0}[budget]
    cfg = config(**{"max_env_steps": 0, "max_minutes": 0, budget: given}, temp_start=0.5,
                 temp_end=0.05)  # fmt: skip
    start = dict(iteration=0, env_steps=0, wall_time=0.0)
    end = dict(iteration=10, env_steps=2000, wall_time=120.0)  # after the last iteration
    halfway = dict(iteration=5, env_steps=1000, wall_time=60.0)
    assert cfg.budget_progress(start) == 0 and cfg.budget_progress(end) == 1
    assert cfg.budget_progress(halfway) == pytest.approx(0.5)
    assert cfg.temperature_at(0.0) == 0.5
    assert cfg.temperature_at(1.0) == pytest.approx(0.05, rel=1e-12)
    assert cfg.temperature_at(0.5) == pytest.approx((0.5 * 0.05) ** 0.5)  # geometric


@pytest.mark.slow
def test_temperature_starts_at_temp_start_ends_at_temp_end_and_falls_monotonically(tmp_path):
    """Each iteration trains at the T of the budget it has spent: the 6th of 6 at 5/6 of the way,
    and the budget's end is T = --temp-end."""
    cfg = config(**{**SCHEDULED, "iterations": 6})
    temperatures = recorded(train(cfg, tmp_path)["history"])
    assert temperatures == pytest.approx([0.8 * (0.1 / 0.8) ** (i / 6) for i in range(6)])
    assert temperatures[0] == 0.8 and all(a > b for a, b in itertools.pairwise(temperatures))
    after = dict(iteration=6, env_steps=0, wall_time=0.0)
    assert cfg.temperature_at(cfg.budget_progress(after)) == pytest.approx(0.1, rel=1e-12)


def test_with_both_budgets_the_schedules_follow_env_steps():
    """--max-env-steps and --max-minutes together: the schedules run over the env steps (a seed's
    run stays reproducible), while either budget may end the run."""
    cfg = config(**SCHEDULED, max_env_steps=400, max_minutes=10.0)
    assert annealing_config.schedule_clock(cfg) == ("max_env_steps", 400)
    assert cfg.budget_progress(dict(iteration=1, env_steps=200, wall_time=540.0)) == 0.5


@pytest.mark.slow
def test_a_step_budget_sets_the_schedule_not_iterations_it_never_reaches(tmp_path):
    cfg = config(**{**SCHEDULED, "iterations": 1000}, max_env_steps=400)
    history = train(cfg, tmp_path)["history"]
    steps_before = [0] + recorded(history, "env_steps")[:-1]
    expected = [0.8 * (0.1 / 0.8) ** (steps / 400) for steps in steps_before]
    assert recorded(history) == pytest.approx(expected, rel=1e-12)
    assert history[-1]["env_steps"] >= 400 > history[-2]["env_steps"]  # the budget ended it
    # --lr-decay on the same clock: the last batch's lr, 1 - (its steps before) / 400 of --lr
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    lrs = [group["lr"] for group in checkpoint["optimizer"]["param_groups"]]
    expected_lrs = cfg.learning_rates(history[-2]["env_steps"] / 400)[:1]  # grouped: no V
    assert lrs == pytest.approx(expected_lrs, rel=1e-12)


@pytest.mark.exact
@pytest.mark.slow
def test_target_entropy_adapts_t_to_the_law_with_that_entropy(tmp_path):
    """A 3-armed bandit (Tree-v0 of depth 1): the law at T is softmax(R/T), whose entropy H(T) is
    known in closed form.  With --target-entropy H(0.3), T starts at 2 and must settle at 0.3."""
    rewards = torch.tensor(tree_env.TreeEnv(depth=1).rewards[0], dtype=F64)

    def law_entropy(temperature):
        return float(pa.policy_entropy(pa.boltzmann_log_probs(rewards, temperature)))

    target = law_entropy(0.3)
    cfg = config("Tree-v0", env_kwargs={"depth": 1}, iterations=60, target_entropy=target,
                 temp_start=2.0, temp_end=2.0, temp_lr=0.5, lr_decay=False)  # fmt: skip
    temperatures = recorded(train(cfg, tmp_path)["history"])
    assert temperatures[0] == 2.0 and law_entropy(2.0) > target
    assert np.mean(temperatures[-20:]) == pytest.approx(0.3, rel=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("stop_when_solved", [True, False])
def test_a_crossing_counts_only_when_fresh_episodes_confirm_it(
    tmp_path, monkeypatch, stop_when_solved
):
    """The evaluations of iterations 1, 2 and 4 cross 475, that of 3 does not; the first
    confirmation falls short, the second holds.  The run goes on past the unconfirmed crossing,
    records it, and is solved at the confirmed one (and stops there with --stop-when-solved);
    confirmation episodes are fresh seeds, not the evaluation's.  summary.crossings lists every
    crossing before the first confirmed solve and the solve itself, each with its confirmation;
    after the solve nothing is confirmed, so the crossing at 4 is neither confirmed nor listed."""
    calls = []

    def scripted(agent, envs, cfg, stream, greedy=False, confirm=False):
        calls.append((stream, confirm, len(envs)))
        if confirm:
            value = 400.0 if sum(c for _, c, _ in calls) == 1 else 480.0
        else:
            value = 300.0 if stream == 3 else 480.0
        return np.full(len(envs), value), 0.5

    monkeypatch.setattr(pa, "evaluate", scripted)
    cfg = config(**{**SMOKE, "iterations": 4}, stop_when_solved=stop_when_solved,
                 confirm_episodes=7)  # fmt: skip
    experiment = train(cfg, tmp_path)
    summary, history = experiment["summary"], experiment["history"]
    keys = ("iteration", "eval_return", "confirm_return")
    assert [tuple(c[key] for key in keys) for c in summary["crossings"]] == [
        (1, 480.0, 400.0),
        (2, 480.0, 480.0),
    ]
    assert summary["solved_iteration"] == 2
    assert summary["iterations"] == (2 if stop_when_solved else 4)
    assert [tuple(r[key] for key in keys) for r in history[2:]] == (
        [] if stop_when_solved else [(3, 300.0, None), (4, 480.0, None)]
    )
    # 7 confirmation episodes, for the crossings before the solve and the solve only
    assert [call for call in calls if call[1]] == [(1, True, 7), (2, True, 7)]


def test_confirmation_seeds_are_fresh_and_never_training_seeds(monkeypatch):
    """Evaluation and confirmation episodes run on seeds >= 2^31 (training seeds lie below), and
    no confirmation episode replays a seed of the evaluation it confirms, even when the draws
    collide (forced here by drawing from a range of 8 seeds)."""
    seen = {}

    def record(envs, agent, seeds, group_size, generator, greedy=False):
        seen[len(seen)] = list(seeds)
        n = len(seeds)  # n one-step episodes of return 1
        zeros, ones = torch.zeros(n, 1, 1), torch.ones(n, 1, 1)
        return pa.Batch(
            torch.zeros(n, 1, 2, 1),
            zeros.long(),
            ones,
            zeros,
            zeros,
            ones.bool(),
            torch.ones(n, 1, dtype=torch.bool),
        )

    monkeypatch.setattr(pa, "sample_episodes", record)
    cfg = config(eval_episodes=32, confirm_episodes=100)
    for stream in range(5):
        pa.evaluate(None, [None] * 32, cfg, stream, False)
        pa.evaluate(None, [None] * 100, cfg, stream, False, confirm=True)
        evaluated, confirming = seen[2 * stream], seen[2 * stream + 1]
        assert min(evaluated + confirming) >= 2**31 and not set(evaluated) & set(confirming)
    real = np.random.default_rng

    class Narrow:  # draws "seeds" from [2^31, 2^31 + 8), so confirmation draws collide
        def __init__(self, seed):
            self.rng = real(seed)

        def integers(self, low, high=None, size=None):
            return self.rng.integers(low, low + 8 if high == 2**32 else high, size)

    monkeypatch.setattr(np.random, "default_rng", Narrow)
    pa.evaluate(None, [None] * 4, dataclasses.replace(cfg, eval_episodes=4), 9, False)
    pa.evaluate(None, [None] * 4, dataclasses.replace(cfg, eval_episodes=4), 9, False, confirm=True)
    assert not set(seen[len(seen) - 2]) & set(seen[len(seen) - 1])


@pytest.mark.slow
def test_evaluation_seeds_never_overlap_training_seeds(tmp_path, monkeypatch):
    used = {"train": set(), "eval": set()}
    real_sample = pa.sample_episodes

    def recording(envs, agent, seeds, group_size, generator, greedy=False):
        kind = "train" if generator is not None and group_size > 1 else "eval"
        used[kind].update(int(s) for s in seeds)
        return real_sample(envs, agent, seeds, group_size, generator, greedy)

    monkeypatch.setattr(pa, "sample_episodes", recording)
    train(config(**{**SMOKE, "iterations": 4}), tmp_path)
    assert len(used["train"]) == 4 * SMOKE["num_groups"] and len(used["eval"]) > 4
    assert not used["train"] & used["eval"]
    assert max(used["train"]) < 2**31 <= min(used["eval"])


# ---- training reaches the exact Boltzmann law on trees -------------------------------------------


TREES = [dict(tree_seed=0), dict(tree_seed=1)]


@pytest.mark.slow
# value with one-step paths (d = 1): with the default 16 episodes per batch tree 1 at T = 0.5
# ends at KL 1.1e-2; with 32 the worst of the four cells measured 2.3e-3.
# The defaults at both temperatures; the two variants (the trust region, one-step paths) at the
# harder T = 0.5 only, to keep `make test` near 3 minutes.
@pytest.mark.parametrize(
    "algo, flags, temperature",
    [
        *[(algo, flags, t) for t in (0.5, 2.0) for algo, flags in [
            ("grouped", {}), ("value", {}), ("err", {}), ("err", {"baseline": "value"})]],
        ("grouped", {"trust_region": 0.05, "iterations": 80}, 0.5),
        ("value", dict(path_length=1, num_groups=32), 0.5),
    ],
)  # fmt: skip
@pytest.mark.parametrize("tree", TREES)  # one test a tree: two workers share the long ones
@pytest.mark.exact
def test_training_reaches_the_exact_boltzmann_law_on_trees(
    tmp_path, algo, flags, temperature, tree
):
    """The real loop (sampler, update, networks) drives KL(p_policy || p_Boltzmann) below 0.01
    on two trees, while plain PG (T = 0) on the same trees does not approach the law.  err runs
    with the group baseline and with the learned soft value (the CartPole/LunarLander path)."""
    cfg = config(
        "Tree-v0",
        algo,
        temp_start=temperature,
        temp_end=temperature,
        env_kwargs=tree,
        eval_every=1000,
        **flags,
    )
    summary = train(cfg, tmp_path / "run")["summary"]
    assert summary["exact_kl"] < 0.01, (tree, summary["exact_kl"])


@pytest.mark.slow
@pytest.mark.parametrize("tree", TREES)
def test_plain_pg_does_not_reach_the_boltzmann_law(tmp_path, capsys, tree):
    cfg = config("Tree-v0", "err", temp_start=0.0, temp_end=0.0, env_kwargs=tree, eval_every=1000)
    agent_run = train(cfg, tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    env = gym.make("Tree-v0", **tree)
    agent = pa.make_agent(cfg, env, with_value=True)
    agent.load_state_dict(checkpoint["agent"])
    assert agent_run["summary"]["exact_kl"] is None  # undefined at T = 0
    kl = exact_kl(agent, env, 1.0)
    assert kl > 0.1
    # --validate reports the same exact KL for an enumerable env (what `make tree` prints)
    checkpoint = str(tmp_path / "checkpoint.pt")
    validate_model(
        dataclasses.replace(
            cfg, temp_start=1.0, temp_end=1.0, eval_episodes=1, load_model=checkpoint
        )
    )
    assert f"p_Boltzmann at T=1) = {kl:.2e}" in capsys.readouterr().out


@pytest.mark.exact
@pytest.mark.slow
def test_without_seed_groups_grouped_annealing_learns_the_wrong_law(tmp_path):
    """Three starts whose log-partition functions differ (log Z = 5.1, 3.8, 4.3 at T = 0.5).
    With seed groups every group shares one start and reaches each start's law.  With a fresh
    seed per episode (--no-seed-groups) a group mixes starts whose V'/T = log Z_s differ, and
    shrinking its spread pulls the starts' laws away from p ∝ exp(R/T).  Measured on seeds 0-2:
    worst start 2.0e-3 shared, mean over starts 0.068-0.13 without."""
    tree = dict(tree_seed=1, num_starts=3, depth=3)
    kls = {}
    for flags in ([], ["--no-seed-groups"]):
        args = [
            "--env",
            "Tree-v0",
            "--temp-start",
            "0.5",
            "--temp-end",
            "0.5",
            "--env-kwargs",
            json.dumps(tree),
            "--eval-every",
            "1000",
            *flags,
        ]
        cfg = dataclasses.replace(
            parsed_config(args),
            eval_episodes=2,
            final_eval_episodes=2,
        )
        train(cfg, tmp_path / str(cfg.seed_groups))
        env = gym.make("Tree-v0", **tree)
        agent = pa.make_agent(cfg, env, with_value=False)
        agent.load_state_dict(
            torch.load(tmp_path / str(cfg.seed_groups) / "checkpoint.pt", weights_only=True)[
                "agent"
            ]
        )
        kls[cfg.seed_groups] = exact_kl(agent, env, 0.5, per_start=True)
    assert max(kls[True]) < 0.01 and np.mean(kls[False]) > 0.03, kls


# ==== 6. Options and command line =================================================================


def test_every_option_is_one_config_field_with_one_flag_and_its_help():
    """Config is the only definition: argparse is generated from it, one flag per field with the
    field's help, and the per-env defaults only override fields that exist."""
    fields = {field.name: field for field in dataclasses.fields(pa.Config)}
    actions = [a for a in annealing_config.build_parser()._actions if a.dest != "help"]
    assert sorted(a.dest for a in actions) == sorted(fields)  # one flag each, nothing else
    for action in actions:  # the field's help, and the default beside a number's
        assert fields[action.dest].metadata["help"] and action.help.startswith(
            fields[action.dest].metadata["help"]
        )
        assert action.default is None  # so that a flag given on the command line is seen
    assert all(key in fields for row in annealing_config.DEFAULTS.values() for key in row)
    assert all(
        field.metadata["must"] in (None, *annealing_config.MUST) for field in fields.values()
    )
    # no flag given: exactly the defaults of the env and algo
    cfg = parsed_config(["--env", "LunarLander-v3"])
    rows = [annealing_config.DEFAULTS[key] for key in ("LunarLander-v3", "LunarLander-v3/grouped")]
    assert cfg == dataclasses.replace(pa.Config(env="LunarLander-v3"), **{**rows[0], **rows[1]})
    # later overrides win (env/algo over */algo), a given flag wins over all, switches flip
    parse = lambda *argv: parsed_config(argv)  # noqa: E731
    assert parse("--algo", "err", "--env", "LunarLander-v3").lr == 5e-4  # env over */err (1e-3)
    assert parse("--algo", "err", "--env", "Tree-v0").lr == 3e-3  # Tree-v0/err over Tree-v0
    assert parse("--algo", "err", "--lr", "0.25").lr == 0.25
    assert parse("--no-obs-norm").obs_norm is False and parse().obs_norm is True
    assert parse("--stop-when-solved").stop_when_solved is True
    lunar = ("--env", "LunarLander-v3")  # on by default there, and a user can turn it off
    assert (
        parse(*lunar).stop_when_solved
        and not parse(*lunar, "--no-stop-when-solved").stop_when_solved
    )
    # every shipped default passes its own checks
    for env in ("CartPole-v1", "LunarLander-v3", "Tree-v0"):
        for algo in ("grouped", "value", "err"):
            pa.check_config(pa.Config(**annealing_config.defaults_for(env, algo)))


def test_configs_saved_with_clip_eps_load_with_its_new_name():
    """Runs saved before the split: grouped's --clip-eps was the trust region, err's the clip."""
    for algo, name in (("grouped", "trust_region"), ("err", "ppo_clip")):
        saved = {**dataclasses.asdict(pa.make_config("CartPole-v1", algo)), "clip_eps": 0.125}
        del saved["trust_region"], saved["ppo_clip"]
        assert getattr(pa.config_of(saved), name) == 0.125


def test_help_shows_the_defaults_of_the_env_and_algo_given(capsys):
    """--env X --algo Y --help: the defaults in force for that pair, not Config's."""
    for argv, lr in [(["--help"], 1e-3), (["--env", "CartPole-v1", "--algo", "value"], 5e-4)]:
        with pytest.raises(SystemExit):
            pa.main([*argv, "--help"] if argv != ["--help"] else argv)
        shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert f"Adam learning rate (V: see --value-lr) (default {lr})" in shown
    assert "learning rate (V: see --value-lr) (default 0.003)" not in shown  # not Config's own
    with pytest.raises(SystemExit):  # an abbreviation is no --algo, for --help either
        pa.main(["--al", "value", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "(V: see --value-lr) (default 0.001)" in shown  # grouped's, not value's


@settings(max_examples=40, deadline=None)
@given(
    st.integers(-3, 3),
    st.integers(-3, 3),
    st.integers(-3, 3),
    st.floats(-1, 1, allow_nan=False),
    st.floats(-1, 1, allow_nan=False),
)
def test_argument_validation_accepts_exactly_the_valid_configs(
    iterations, groups, size, lr, temperature
):
    argv = [
        "--iterations",
        str(iterations),
        "--num-groups",
        str(groups),
        "--group-size",
        str(size),
        "--lr",
        repr(lr),
        "--temp-start",
        repr(temperature),
        "--temp-end",
        repr(temperature),
    ]
    valid = iterations > 0 and groups > 0 and size >= 2 and lr > 0 and temperature > 0
    try:
        cfg = parsed_config(argv)
    except pa.UserError as error:
        assert not valid, error
        assert "\n" not in str(error)
    else:
        assert valid and (cfg.num_groups, cfg.group_size, cfg.lr) == (groups, size, lr)


# ==== toy_bandit.py (`make bandit`) ===============================================================


@pytest.mark.exact
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bandit_annealing_settles_on_boltzmann_entropy_bonus_does_not(seed):
    import toy_bandit

    methods = toy_bandit.run(seed=seed)["methods"]
    for name in ("annealing", "grouped"):
        assert methods[name]["kl_to_target"] < 0.01 and methods[name]["late_std"] < 1e-3
    assert methods["entropy_bonus"]["kl_to_target"] < 0.05
    assert methods["entropy_bonus"]["late_std"] >= 10 * methods["annealing"]["late_std"]
    assert methods["pg"]["final_probs"][2] > 0.95


# ==== the README's Python API ===================================================================


@pytest.mark.slow
def test_readme_python_snippet_runs_as_written(tmp_path):
    """The block under "### Python API", run as a user would (from another folder, the module
    importable as after `pip install -e .`): it trains, acts, loads, and prints."""
    readme = (HERE / "README.md").read_text()
    snippet = readme.split("### Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    result = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    final, action, greedy = result.stdout.split()[-3:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "experiment.json").read_text())["summary"]
    assert float(final) == pytest.approx(summary["final_eval"]["greedy"]["mean"])
    assert action in ("0", "1") and greedy in ("0", "1") and (run_dir / "checkpoint.pt").is_file()
