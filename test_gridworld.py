"""GridWorld-v0: the exact law on an MDP with cycles and a horizon (gridworld_env.py).

Soft value iteration is checked against brute-force enumeration of every action sequence, the
exact KL against the KL summed over those sequences, the env's moves, border, rewards and terminal
horizon against the spec, and the training loop against the law on a small grid."""

import itertools
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import policy_annealing as pa
from gridworld_env import SEED_004_GRID, GridWorld
from testing_helpers import config, train

F64 = torch.float64
SMALL = dict(grid=[[0.0, -1.0, 2.0], [-1.0, 0.5, 1.0]], start=[1, 0], horizon=3)


def enumerate_trajectories(env: GridWorld):
    """Every action sequence from the start: (cells before each action, actions, return)."""
    for actions in itertools.product(range(5), repeat=env.horizon):
        env.reset()
        cells, total = [], 0.0
        for action in actions:
            cells.append(env.cell)
            total += env.step(action)[1]
        yield cells, actions, total


def random_agent(env: GridWorld, seed: int) -> pa.Agent:
    """A policy far from uniform, so that each state's actions differ: random weights x 3."""
    cfg = config("GridWorld-v0", "grouped", seed=seed, env_kwargs=SMALL)
    agent = pa.make_agent(cfg, env, with_value=False)
    with torch.no_grad():
        for parameter in agent.policy.parameters():
            parameter.mul_(3.0)
    return agent


@pytest.mark.parametrize("temperature", [0.3, 1.0, 4.0])
def test_soft_value_iteration_is_the_boltzmann_law_over_action_sequences(temperature):
    env = GridWorld(**SMALL)
    values, log_policy = env.soft_value_iteration(temperature)
    paths = list(enumerate_trajectories(env))
    returns = torch.tensor([total for *_, total in paths], dtype=F64)
    # V_H(start) = T log sum_tau exp(R(tau)/T)
    partition = temperature * torch.logsumexp(returns / temperature, 0)
    soft_value = values[env.horizon, env.start_cell()].item()
    assert soft_value == pytest.approx(partition.item(), abs=1e-12)
    # and prod_k pi*_k(a|s) is p(tau) ∝ exp(R(tau)/T), sequence by sequence
    law = torch.log_softmax(returns / temperature, 0)
    steps_left = range(env.horizon, 0, -1)
    log_p = torch.stack(
        [
            sum(log_policy[k - 1, c, a] for k, c, a in zip(steps_left, cells, actions, strict=True))
            for cells, actions, _ in paths
        ]  # fmt: skip
    )
    assert torch.allclose(log_p, law, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_kl_is_the_kl_summed_over_every_action_sequence(seed):
    env = GridWorld(**SMALL)
    agent, temperature = random_agent(env, seed), 0.7
    paths = list(enumerate_trajectories(env))
    observations = []  # the agent's log pi at each (cell, steps left) it can meet
    for k in range(env.horizon, 0, -1):
        obs = torch.zeros(env.num_cells, env.observation_space.shape[0])
        obs[:, (k - 1) * env.num_cells : k * env.num_cells] = torch.eye(env.num_cells)
        observations.append(agent.head.log_probs(agent.policy_outputs(obs)).double().detach())
    log_p = torch.stack(
        [
            sum(observations[t][c, a] for t, (c, a) in enumerate(zip(cells, actions, strict=True)))
            for cells, actions, _ in paths
        ]  # fmt: skip
    )
    returns = torch.tensor([total for *_, total in paths], dtype=F64)
    law = torch.log_softmax(returns / temperature, 0)
    brute_force = float((log_p.exp() * (log_p - law)).sum())
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-6)  # float32 policy: its own law
    assert brute_force > 0.05  # far from the law, so the check below has something to compare
    assert env.exact_trajectory_kl(agent, temperature) == pytest.approx(brute_force, rel=1e-6)


def test_the_soft_optimal_policy_has_exact_kl_zero():
    env, temperature = GridWorld(**SMALL), 0.5
    log_policy = env.soft_value_iteration(temperature)[1]

    class Law:  # pi*_k as an agent: the observation's one-hot picks its row
        class head:
            log_probs = staticmethod(lambda outputs: outputs)

        @staticmethod
        def policy_outputs(obs):
            return obs.double() @ log_policy.reshape(-1, 5)

    assert abs(env.exact_trajectory_kl(Law, temperature)) < 1e-12


def test_moves_border_rewards_and_the_terminal_horizon():
    env = gym.make("GridWorld-v0", **SMALL)
    obs, _ = env.reset(seed=3)
    grid, base = env.unwrapped.grid, env.unwrapped
    assert base.position == (1, 0) and obs.argmax() == (3 - 1) * 6 + 3  # steps left 3, cell (1, 0)
    # down and left run into the border: they stay, and pay the cell entered (the same cell)
    for action in (2, 3):
        obs, reward, terminated, truncated, _ = env.step(action)
        assert base.position == (1, 0) and reward == grid[1, 0]
    assert obs.argmax() == (1 - 1) * 6 + 3 and not (terminated or truncated)
    obs, reward, terminated, truncated, _ = env.step(4)  # right: enters (1, 1), the last step
    assert base.position == (1, 1) and reward == grid[1, 1] == 0.5
    assert terminated and not truncated and not obs.any()  # the horizon ends it: no bootstrap
    env.reset()
    for action, cell in [(1, (0, 0)), (1, (0, 0)), (4, (0, 1))]:  # up, up at the border, right
        env.step(action)
        assert base.position == cell


def test_the_default_is_the_seed_grid_and_start():
    env = GridWorld()
    assert env.grid.tolist() == SEED_004_GRID and env.start == (5, 0) and env.grid[0, 5] == 1000
    env.reset()
    assert env.position == (5, 0)
    assert GridWorld(reward_scale=0.01).grid[0, 5] == 10  # the README's and `make grid`'s


@pytest.mark.parametrize(
    "kwargs, expect",
    [
        ('{"grid": [[0, 1], [2]]}', "a rectangular list of rows"),
        ('{"start": [6, 0]}', "start: [row, col] inside the 6x6 grid"),
        ('{"start": 5}', "start: [row, col] inside the 6x6 grid"),
        ('{"horizon": 0}', "horizon: a positive integer"),
        ('{"horizon": true}', "horizon: a positive integer"),
        ('{"start": [0.7, 0]}', "start: [row, col] inside the 6x6 grid"),
        ('{"start": ["a", "b"]}', "start: [row, col] inside the 6x6 grid"),
        ('{"reward_scale": "x"}', "reward_scale: a finite number"),
        (
            json.dumps({"grid": [[0] * 40] * 30, "horizon": 1, "start": [0, 0]}),
            "rows * cols at most",
        ),
        ('{"horizon": 100000}', "rows * cols * horizon"),
        ('{"gird": [[1]]}', "takes no keyword 'gird'"),
        ('{"start": [0, 6]}', "start: [row, col] inside the 6x6 grid"),  # one column too far
        ('{"grid": [[NaN, 1.0]]}', "finite rewards"),
        ('{"grid": [[1e308, 1]], "reward_scale": 10}', "finite rewards"),  # no overflow warning
        ('{"reward_scale": Infinity}', "reward_scale: a finite number"),
    ],
)
@pytest.mark.filterwarnings("error")  # a warning would be more lines on stderr
def test_bad_grid_keywords_give_one_line_and_write_nothing(capsys, tmp_path, kwargs, expect):
    out = tmp_path / "run"
    code = pa.main(["--env", "GridWorld-v0", "--env-kwargs", kwargs, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err and expect in err, err
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.exact
@pytest.mark.parametrize("algo, iterations", [("grouped", 40), ("value", 40), ("err", 150)])
def test_training_reaches_the_exact_law_on_a_small_grid(tmp_path, algo, iterations):
    """The real loop drives KL(p_policy || p_Boltzmann) below 0.01 on a grid with cycles: the
    policy must depend on the steps left (a stay and a move lead to the same cells).  `make grid`
    runs the defaults on two grids at two temperatures; fewer iterations here, for the time."""
    cfg = config("GridWorld-v0", algo, temp_start=0.5, temp_end=0.5, env_kwargs=SMALL,
                 iterations=iterations, eval_every=1000)  # fmt: skip
    summary = train(cfg, tmp_path)["summary"]
    assert summary["exact_kl"] < 0.01, summary["exact_kl"]
    # and it did move: the law's 0.54 nats a step are far from the uniform policy's log 5
    assert summary["final_eval"]["sampled"]["entropy"] < np.log(5) - 0.5
