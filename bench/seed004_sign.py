"""Seed 004's maximum-entropy policy gradient, its sign against ERR's, on GridWorld-v0.

    python bench/seed004_sign.py [--temperature 2] [--seeds 0 1 2] [-o bench/seed004_sign.md]

Seed 004 trains a softmax policy by REINFORCE on the reward-to-go of r + alpha log pi: the sign
rewards a *low* entropy. ERR (the write-up's) uses r - T log pi, whose stationary point is the
Boltzmann law. Both run in the seed's loop (no baseline, its 10 trajectories a batch, 500
iterations, Adam; a last row adds a baseline), adapted: a table of logits over (steps left, cell),
the reward of the cell entered, no discount on a horizon of 10, no random-action mixing
(uncorrected, it changes the law); docs/experiments.md lists every difference. The seed's grid,
rewards / 100: the law at T = 2 is not a point mass, and every algorithm of the project reaches it
(README, Exactness). Reported: the exact KL to the law at T = alpha, and the entropy a step."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gridworld_env import GridWorld  # noqa: E402

# (sign of alpha log pi in the return, baseline: the batch's mean reward-to-go at each step)
UPDATES = {
    "seed 004 (+alpha log pi)": (+1.0, False),
    "ERR (-T log pi)": (-1.0, False),
    "plain PG (alpha = 0)": (0.0, False),
    "ERR with a batch-mean baseline": (-1.0, True),
}


class TablePolicy(torch.nn.Module):
    """Logits per (steps left, cell): the observation's one-hot times a weight matrix."""

    def __init__(self, env: GridWorld):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(env.horizon * env.num_cells, 5))
        self.head = self  # exact_trajectory_kl reads agent.head.log_probs(agent.policy_outputs(x))

    def policy_outputs(self, obs):
        return obs @ self.logits

    @staticmethod
    def log_probs(outputs):
        return torch.log_softmax(outputs, dim=-1)


def sample(env: GridWorld, policy: TablePolicy, episodes: int, generator):
    """episodes x horizon actions, their log pi (with grad) and rewards, and the entropy a step."""
    cells = torch.full((episodes,), env.start_cell())
    log_pis, rewards, entropies = [], [], []
    for steps_left in range(env.horizon, 0, -1):
        log_pi = torch.log_softmax(policy.logits[(steps_left - 1) * env.num_cells + cells], -1)
        actions = torch.multinomial(log_pi.exp().detach(), 1, generator=generator).squeeze(1)
        log_pis.append(log_pi.gather(1, actions[:, None]).squeeze(1))
        entropies.append(-(log_pi.exp() * log_pi).sum(-1).detach())
        rewards.append(torch.as_tensor(env.reward[cells, actions], dtype=torch.float32))
        cells = torch.as_tensor(env.next_cell[cells, actions])
    return torch.stack(log_pis, 1), torch.stack(rewards, 1), torch.stack(entropies, 1)


def train(env, sign, baseline, alpha, seed, iterations=500, episodes=10, lr=0.05):
    """The seed's loop: reward-to-go G of r + sign * alpha * log pi, detached; loss
    -mean(G log pi), G less its batch mean at each step with `baseline` (the seed has none)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    policy = TablePolicy(env)
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    for _ in range(iterations):
        log_pi, rewards, _ = sample(env, policy, episodes, generator)
        shaped = (rewards + sign * alpha * log_pi).detach()
        reward_to_go = shaped.flip(1).cumsum(1).flip(1)  # (episodes, horizon)
        if baseline:
            reward_to_go = reward_to_go - reward_to_go.mean(0)
        loss = -(reward_to_go * log_pi).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        _, rewards, entropies = sample(env, policy, 1000, generator)
        kl = env.exact_trajectory_kl(policy, alpha)
    return kl, float(entropies.mean()), float(rewards.sum(1).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--temperature", type=float, default=2.0, help="alpha = T")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("-o", "--output", help="also write the table here")
    args = parser.parse_args(argv)
    env, alpha = GridWorld(reward_scale=0.01, horizon=10), args.temperature
    law = env.soft_value_iteration(alpha)[1]
    law_entropy = env.expected_sum(law, -(law.exp() * law).sum(-1)) / env.horizon
    lines = [
        f"GridWorld-v0, seed 004's grid / 100, horizon 10, alpha = T = {alpha}, seeds {args.seeds};"
        f" the law's entropy a step {law_entropy:.3f} nats",
        "",
        "| update | exact KL to the law (mean, worst) | entropy a step | return |",
        "|---|---|---|---|",
    ]
    for name, (sign, baseline) in UPDATES.items():
        results = np.array([train(env, sign, baseline, alpha, seed) for seed in args.seeds])
        kl, entropy, ret = results.mean(0)
        worst = results[:, 0].max()
        lines.append(f"| {name} | {kl:.2e}, {worst:.2e} | {entropy:.3f} | {ret:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.output:
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
