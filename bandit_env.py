"""QuadraticBandit-v0: the exact check for continuous actions, as Tree-v0 is for discrete ones.

One state, one step, reward R(a) = -1/2 (a - mu)^T A (a - mu) with A diagonal (`curvature`).  Its
Boltzmann law p(a) ∝ exp(R(a)/T) is exactly the Gaussian N(mu, T A^-1): the density annealed at T
is known in closed form, and so is a Gaussian policy's KL to it.  Actions are unbounded, so the
agent takes its Gaussian's sample as it is, with no tanh squash (see Agent in policy_annealing.py),
and the law is a proper Gaussian.  The training loop records `exact_trajectory_kl` after each
iteration.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch


class QuadraticBandit(gym.Env):
    def __init__(self, mean=(0.5,), curvature=(1.0,)):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.curvature = np.asarray(curvature, dtype=np.float64)
        if self.mean.shape != self.curvature.shape or (self.curvature <= 0).any():
            raise TypeError("mean and curvature: lists of one length, each curvature > 0")
        dim = len(self.mean)
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.observation_space = gym.spaces.Box(0.0, 2.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.ones(1, np.float32), {}

    def step(self, action):
        reward = -0.5 * float((self.curvature * (np.asarray(action) - self.mean) ** 2).sum())
        return np.ones(1, np.float32), reward, True, False, {}

    def exact_law(self, temperature: float) -> tuple[np.ndarray, np.ndarray]:
        """Mean and per-dimension variance of the law at T: N(mu, T A^-1)."""
        return self.mean, temperature / self.curvature

    def exact_trajectory_kl(self, agent, temperature: float) -> float:
        """KL(pi || N(mu, T A^-1)) of the agent's Gaussian at the one state, in float64."""
        with torch.no_grad():
            mean, log_std = agent.head.gaussian(agent.policy_outputs(torch.ones(1, 1)))
        mean, var = mean[0].double().numpy(), np.exp(2 * log_std[0].double().numpy())
        law_mean, law_var = self.exact_law(temperature)
        per_dim = 0.5 * (np.log(law_var / var) + (var + (mean - law_mean) ** 2) / law_var - 1)
        return float(per_dim.sum())
