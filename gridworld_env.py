"""GridWorld-v0: the exact check on an MDP with cycles and a horizon, as Tree-v0 is without them.

The grid of seed 004 (maximum-entropy policy gradients): a +1000 goal at row 0, column 5, cells of
-1, -10 and -100 around it, the start at row 5, column 0.  Actions 0 stay, 1 up, 2 down, 3 left,
4 right; a move into the border stays.  A step's reward is the value of the cell entered, and the
episode terminates after `horizon` steps: the horizon is part of the task, so nothing bootstraps.
Seed 004 numbers its moves otherwise (3 right, 4 left) and pays the cell occupied before a move.
`reward_scale` multiplies the grid: at T of a few units the seed's +1000 makes the law a point mass
(and a goal that no policy finds by chance, see docs/experiments.md); / 100 at T 2 it is not.

With a horizon the Boltzmann law over trajectories, p(tau) ∝ exp(R(tau)/T), needs a policy that
depends on the steps left, so the observation is the one-hot of (steps left, cell).  The law is the
soft-optimal policy of backward soft value iteration over (cell, steps left) (gamma = 1):
    V_0(s) = 0,   V_k(s) = T log sum_a exp((r(s, a) + V_{k-1}(s')) / T),
    pi*_k(a|s) = exp((r(s, a) + V_{k-1}(s') - V_k(s)) / T),
and since the moves are deterministic, prod_k pi*_k = exp(R(tau)/T) / exp(V_H(start)/T) over action
sequences (two sequences that reach the same cells, a bump into the border and a stay, are two
trajectories).  Registered by policy_annealing.py; `make grid` runs every algorithm on it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

SEED_004_GRID = [
    [-1, -1, -1, -10, -1, 1000],
    [-100, -1, -10, -1, -10, -10],
    [-1, -10, -100, -10, -1, -1],
    [-1, -1, -100, -10, -1, -1],
    [-10, -1, -100, -100, -100, -1],
    [-1, -1, -100, -100, -100, -1],
]
MOVES = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))  # stay, up, down, left, right: (row, col)
MAX_OBSERVATION = 100_000  # rows * cols * horizon: the one-hot observation's length
MAX_CELLS = 1_000  # exact_trajectory_kl holds a (cells, observation) matrix: 400 MB at most


class GridWorld(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, grid=None, start=(5, 0), horizon=12, reward_scale=1.0, render_mode=None):
        is_int = lambda value: isinstance(value, int) and not isinstance(value, bool)  # noqa: E731
        if not (isinstance(reward_scale, int | float) and np.isfinite(reward_scale)):
            raise TypeError(f"reward_scale: a finite number, not {reward_scale!r}")
        try:  # a bad keyword's value is a TypeError: gym.make's, and run_io's one line
            grid = np.asarray(SEED_004_GRID if grid is None else grid, dtype=np.float64)
            with np.errstate(over="ignore"):  # an overflow is an inf, refused below in one line
                self.grid = grid * float(reward_scale)
        except (TypeError, ValueError):
            self.grid = np.zeros(0)
        if self.grid.ndim != 2 or self.grid.size == 0 or not np.isfinite(self.grid).all():
            raise TypeError("grid: a rectangular list of rows of finite rewards")
        rows, cols = self.grid.shape
        if not (is_int(horizon) and horizon >= 1):
            raise TypeError(f"horizon: a positive integer, not {horizon!r}")
        inside = lambda rc: 0 <= rc[0] < rows and 0 <= rc[1] < cols  # noqa: E731
        is_cell = isinstance(start, list | tuple) and len(start) == 2 and all(map(is_int, start))
        if not (is_cell and inside(start)):
            raise TypeError(f"start: [row, col] inside the {rows}x{cols} grid, not {start!r}")
        if rows * cols * horizon > MAX_OBSERVATION or rows * cols > MAX_CELLS:
            raise TypeError(
                f"rows * cols * horizon: at most {MAX_OBSERVATION} (the observation), "
                f"rows * cols at most {MAX_CELLS} (the exact KL's cells x observation)"
            )
        self.start, self.horizon = (int(start[0]), int(start[1])), horizon
        self.num_cells = rows * cols
        # next_cell[cell, action] and reward[cell, action] = the value of the cell entered
        cells = [(r, c) for r in range(rows) for c in range(cols)]
        entered = [
            [(min(max(r + dr, 0), rows - 1), min(max(c + dc, 0), cols - 1)) for dr, dc in MOVES]
            for r, c in cells
        ]
        self.next_cell = np.array([[r * cols + c for r, c in row] for row in entered])
        self.reward = np.array([[self.grid[r, c] for r, c in row] for row in entered])
        self.observation_space = gym.spaces.Box(0, 1, (horizon * self.num_cells,), np.float32)
        self.action_space = gym.spaces.Discrete(len(MOVES))

    @property
    def position(self) -> tuple[int, int]:
        return divmod(self.cell, self.grid.shape[1])

    def observation(self):
        obs = np.zeros(self.observation_space.shape, np.float32)
        obs[(self.steps_left - 1) * self.num_cells + self.cell] = 1  # never read at steps_left 0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cell, self.steps_left = self.start_cell(), self.horizon
        return self.observation(), {}

    def step(self, action):
        reward = float(self.reward[self.cell, action])
        self.cell, self.steps_left = int(self.next_cell[self.cell, action]), self.steps_left - 1
        done = self.steps_left == 0
        return (np.zeros(self.observation_space.shape, np.float32) if done else self.observation(),
                reward, done, False, {})  # fmt: skip

    def soft_value_iteration(self, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """V_k(s) for k = 0 .. horizon, (horizon + 1, num_cells), and log pi*_k(a|s) for
        k = 1 .. horizon at index k - 1, (horizon, num_cells, 5); float64."""
        reward = torch.as_tensor(self.reward, dtype=torch.float64)
        values = [torch.zeros(self.num_cells, dtype=torch.float64)]  # V_0 = 0: the episode ends
        log_policy = []
        for _ in range(self.horizon):
            q = (reward + values[-1][self.next_cell]) / temperature  # (r(s, a) + V_{k-1}(s')) / T
            values.append(temperature * torch.logsumexp(q, dim=-1))
            log_policy.append(torch.log_softmax(q, dim=-1))  # = q - V_k / T
        return torch.stack(values), torch.stack(log_policy)

    def start_cell(self) -> int:
        return self.start[0] * self.grid.shape[1] + self.start[1]

    @torch.no_grad()
    def log_policy_of(self, agent) -> torch.Tensor:
        """The agent's log pi_k(a|s) at every (steps left k, cell), as soft_value_iteration lays
        out the law's: (horizon, num_cells, 5), float64, index k - 1."""
        rows = []
        for steps_left in range(1, self.horizon + 1):
            obs = torch.zeros(self.num_cells, self.observation_space.shape[0])
            offset = (steps_left - 1) * self.num_cells
            obs[:, offset : offset + self.num_cells] = torch.eye(self.num_cells)
            rows.append(agent.head.log_probs(agent.policy_outputs(obs).double()))
        return torch.stack(rows)

    def expected_sum(self, log_policy: torch.Tensor, step_values: torch.Tensor) -> float:
        """E sum_k step_values[k - 1, s_k] over the trajectories of log_policy (horizon, num_cells,
        5) from the start, exact: forward over its distribution of cells, steps left H down to 1.
        step_values: (horizon, num_cells)."""
        occupancy = torch.zeros(self.num_cells, dtype=torch.float64)
        occupancy[self.start_cell()] = 1.0
        next_cell, total = torch.as_tensor(self.next_cell).flatten(), 0.0
        for steps_left in range(self.horizon, 0, -1):
            total += float(occupancy @ step_values[steps_left - 1])
            moved = torch.zeros_like(occupancy)  # the occupancy after this step
            moved.index_add_(
                0, next_cell, (occupancy[:, None] * log_policy[steps_left - 1].exp()).flatten()
            )
            occupancy = moved
        return total

    def exact_trajectory_kl(self, agent, temperature: float) -> float:
        """KL(p_policy(tau) || p_Boltzmann(tau)) = E_policy sum_k log pi_k(a|s) / pi*_k(a|s), exact
        (expected_sum over the agent's own distribution of cells)."""
        law = self.soft_value_iteration(temperature)[1]  # (horizon, num_cells, 5)
        log_pi = self.log_policy_of(agent)
        return self.expected_sum(log_pi, (log_pi.exp() * (log_pi - law)).sum(-1))
