"""PG vs entropy bonus vs annealing on the write-up's three-armed bandit.

Arms A and B pay little, C pays most; one action per episode, deterministic rewards, a softmax
policy over three logits.  At temperature T the Boltzmann target is p* = softmax(R/T).

  pg             REINFORCE, batch-mean baseline                  -> collapses onto C
  entropy_bonus  the same + T * H(pi) in the objective           -> p* on average, never settles
  annealing      REINFORCE on the ERR reward R - T log p         -> p*, and stops there
  grouped        grouped_loss with the batch as one group        -> p*, and stops there

Why the last two stop: at p*, R - T log p*(a) = T log Z for every arm, so every sample's
advantage is exactly 0 and so is the gradient.  The entropy bonus has the same optimum in
expectation, but its sampled REINFORCE term is not 0 at p*, so it keeps kicking the policy.
Every method uses the same plain SGD and the same sampled actions' count per step.  SGD, not
Adam: Adam divides a vanishing gradient by its own vanishing scale, which turns "stationary"
back into steps of size lr and would hide the effect this toy is about.

    python toy_bandit.py --plot bandit.png --json bandit.json
"""

import argparse
import json
import sys

import numpy as np
import torch

from policy_annealing import boltzmann_log_probs, err_rewards, grouped_loss, policy_entropy

REWARDS = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)  # A, B low; C high
ARMS = "ABC"
METHODS = ("pg", "entropy_bonus", "annealing", "grouped")


def method_loss(method, logits, actions, temperature):
    """Loss of one method on a batch of sampled arms. logits: (3,); actions: (batch,)."""
    log_pi = torch.log_softmax(logits, -1)
    log_probs = log_pi[actions]  # (batch,)
    rewards = REWARDS[actions]
    if method == "grouped":  # one group = the batch; each episode is one step
        return grouped_loss(
            rewards[None, :, None],
            log_probs[None, :, None],
            torch.ones(1, len(actions), 1, dtype=torch.bool),
            temperature,
        )
    if method == "annealing":
        rewards = err_rewards(rewards, log_probs.detach(), temperature)
    advantages = rewards - rewards.mean()
    loss = -(advantages * log_probs).mean()
    if method == "entropy_bonus":
        loss = loss - temperature * policy_entropy(log_pi)
    return loss


def run(seed=0, steps=2000, batch_size=16, lr=0.1, temperature=0.5):
    """Train every method from uniform logits; returns the JSON-able result."""
    target = boltzmann_log_probs(REWARDS, temperature).exp()
    result = {
        "target": target.tolist(),
        "rewards": REWARDS.tolist(),
        "temperature": temperature,
        "methods": {},
    }
    for index, method in enumerate(METHODS):
        generator = torch.Generator().manual_seed(seed * len(METHODS) + index)
        logits = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.SGD([logits], lr=lr)
        history = []
        for _ in range(steps):
            probs = torch.softmax(logits.detach(), -1)
            actions = torch.multinomial(probs, batch_size, replacement=True, generator=generator)
            optimizer.zero_grad()
            method_loss(method, logits, actions, temperature).backward()
            optimizer.step()
            history.append(torch.softmax(logits.detach(), -1).tolist())
        final = torch.tensor(history[-1], dtype=torch.float64)
        late = np.array(history[-(steps // 4) :])
        kl = float((final * (final.log() - target.log())).sum())
        result["methods"][method] = {
            "final_probs": final.tolist(),
            "kl_to_target": max(0.0, kl),  # >= 0 up to round-off
            "late_std": float(late.std(0).max()),
            "history": history,
        }
    return result


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METHODS), figsize=(4 * len(METHODS), 3.2), sharey=True)
    colors = ["tab:blue", "tab:orange", "tab:green"]
    for ax, method in zip(axes, METHODS, strict=False):
        history = np.array(result["methods"][method]["history"])
        for arm in range(3):
            ax.plot(history[:, arm], color=colors[arm], label=f"p({ARMS[arm]})", linewidth=1)
            ax.axhline(result["target"][arm], color=colors[arm], linestyle="--", linewidth=1)
        stats = result["methods"][method]
        ax.set_title(
            f"{method}\nKL {stats['kl_to_target']:.1e}, late std {stats['late_std']:.1e}",
            fontsize=10,
        )
        ax.set_xlabel("step")
    axes[0].set_ylabel("probability (dashed: softmax(R/T))")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--plot", help="write a PNG of the probabilities here")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size"):
        if getattr(args, name) < 4:
            parser.error(f"--{name.replace('_', '-')} must be >= 4")
    if not (args.lr > 0 and args.temperature > 0):
        parser.error("--lr and --temperature must be > 0")
    result = run(args.seed, args.steps, args.batch_size, args.lr, args.temperature)
    print(
        f"target softmax(R/T), T={args.temperature}: "
        + " ".join(f"{p:.3f}" for p in result["target"])
    )
    print(f"{'method':<14} {'p(A)':>6} {'p(B)':>6} {'p(C)':>6} {'KL':>9} {'late std':>9}")
    for method, stats in result["methods"].items():
        probs = " ".join(f"{p:6.3f}" for p in stats["final_probs"])
        print(f"{method:<14} {probs} {stats['kl_to_target']:9.2e} {stats['late_std']:9.2e}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file)
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
