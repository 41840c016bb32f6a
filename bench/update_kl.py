"""How far does each update move the policy?  Trains one run with any policy_annealing flags and
measures every update's mean KL(pi_before || pi_after) over the states of the batch it trained
on.  After the first confirmed solve it splits the updates into batches whose episodes all reached
the step limit (equal returns: only sampling noise to fit) and batches with a failure (signal).

    python bench/update_kl.py --seed 10                                    # CartPole grouped
    python bench/update_kl.py --seed 10 --optim-steps 50 --lr 3e-3 --trust-region 0.05   # the old

It measures, it does not change the run: the history is the one policy_annealing.py writes.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import annealing_config  # noqa: E402
import policy_annealing as pa  # noqa: E402


def state_kl(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """KL(pi_before || pi_after) at every state, from log-probs. (..., A) twice -> (...)."""
    return (before.exp() * (before - after)).sum(-1)


def mean_kl(before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor) -> float:
    """KL(pi_before || pi_after) over real steps. (G, K, steps, A) twice, mask (G, K, steps)."""
    return float(state_kl(before, after)[mask].mean())


def main(argv: list[str]) -> None:
    measured = []  # (every episode at the step limit, KL of the update), one per update

    def measure(update):
        def wrapped(agent, optimizer, batch, *args):
            states = batch.observations[..., :-1, :]
            with torch.no_grad():
                before = agent.head.log_probs(agent.policy_outputs(states))
            loss = update(agent, optimizer, batch, *args)
            with torch.no_grad():
                kl = mean_kl(before, agent.head.log_probs(agent.policy_outputs(states)), batch.mask)
            full = not bool(batch.terminated.any())  # every episode truncated at the limit
            measured.append((full, kl))
            return loss

        return wrapped

    for algo, update in list(pa.UPDATES.items()):
        pa.UPDATES[algo] = measure(update)
    with tempfile.TemporaryDirectory() as out:
        args = annealing_config.build_parser().parse_args([*argv, "--quiet", "--out", out])
        cfg = annealing_config.config_from_args(args)
        summary = pa.train(cfg, Path(out))[1]["summary"]
    solved = summary.get("solved_iteration")
    print(f"{len(measured)} updates, first confirmed solve at iteration {solved}")
    if solved is None:
        return
    after = measured[solved:]  # the updates after the solving one
    for name, keep in (("all episodes at the step limit", True), ("a failure", False)):
        kls = np.array([kl for full, kl in after if full == keep])
        if len(kls):
            print(
                f"batches with {name}: {len(kls)}, update KL mean {kls.mean():.4f}"
                f" median {np.median(kls):.4f} max {kls.max():.4f} nats"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
