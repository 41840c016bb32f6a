"""Tree-v0: a small deterministic tree whose every trajectory can be enumerated, so that a policy's
trajectory law can be compared with the Boltzmann law p(tau) ∝ exp(R(tau) / T) exactly.

Registered by policy_annealing.py as `--env Tree-v0`; `make tree` runs every algorithm on it.
The training loop records `exact_trajectory_kl` after each iteration for any env that has it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch


class TreeEnv(gym.Env):
    """Each node has `num_actions` children; a branch ends at `depth` or, with probability
    `early_end`, earlier, so episodes differ in length.  Rewards are fixed by `tree_seed`; the
    observation is the one-hot index of the node.  Nodes 0 .. num_starts - 1 are the roots of
    separate subtrees; reset(seed) starts at root seed % num_starts, so a seed fixes the start."""

    metadata = {"render_modes": []}

    def __init__(
        self, depth=4, num_actions=3, tree_seed=0, early_end=0.3, num_starts=1, render_mode=None
    ):
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
        if seed is not None:
            self.node = seed % self.num_starts
        else:
            self.node = int(self.np_random.integers(self.num_starts))
        return self.one_hot(self.node), {}

    def step(self, action):
        reward = self.rewards[self.node][action]
        self.node = self.children[self.node][action]
        return self.one_hot(self.node), reward, not self.children[self.node], False, {}

    def trajectories(self, start=0):
        """Every start-to-leaf path as (nodes visited before each action, actions, rewards)."""
        paths, stack = [], [([start], [], [])]
        while stack:
            nodes, actions, rewards = stack.pop()
            if not self.children[nodes[-1]]:
                paths.append((nodes[:-1], actions, rewards))
                continue
            for action, child in enumerate(self.children[nodes[-1]]):
                reward = self.rewards[nodes[-1]][action]
                stack.append((nodes + [child], actions + [action], rewards + [reward]))
        return paths

    @torch.no_grad()
    def exact_trajectory_kl(self, agent, temperature: float, per_start=False):
        """KL(p_policy(tau|s) || p_Boltzmann(tau|s)) over every trajectory from each start s,
        p_Boltzmann(tau|s) ∝ exp(R(tau)/T): the mean over starts, or with per_start their list."""
        outputs = agent.policy_outputs(torch.eye(self.num_nodes))
        log_pi = agent.head.log_probs(outputs.double())  # (num_nodes, num_actions), in float64
        kls = []
        for start in range(self.num_starts):
            paths = self.trajectories(start)
            log_p = torch.stack([log_pi[nodes, actions].sum() for nodes, actions, _ in paths])
            returns = torch.tensor([sum(rewards) for *_, rewards in paths], dtype=torch.float64)
            # policy_annealing.boltzmann_log_probs, written out: importing the module from here
            # would run it twice when it is the script.
            law = torch.log_softmax(returns / temperature, dim=-1)
            kls.append(float((log_p.exp() * (log_p - law)).sum()))
        return kls if per_start else sum(kls) / len(kls)
