"""Seed 002's question for `err`: does normalising the advantages help? One run of
policy_annealing.py with PPO's usual per-minibatch normalisation, (A - mean) / (std + 1e-8), as
CleanRL's ppo_continuous_action.py and SB3 apply it; every other option is the command line's.

    python bench/advantage_norm.py --env Hopper-v5 --algo err --seed 2000 --out DIR

The project's `err` leaves the advantages as they are (update_err says why: at the Boltzmann
policy they shrink to 0, and rescaling them to unit std keeps the policy moving). This script is
the measurement of that choice, not an option of the module: it swaps clipped_policy_loss for one
that normalises first, so nothing else changes. docs/experiments.md has the table."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import policy_annealing as pa  # noqa: E402

LABEL = "err, advantages normalised per minibatch"
plain_clipped_policy_loss = pa.clipped_policy_loss


def normalised_clipped_policy_loss(log_probs, old_log_probs, advantages, clip_eps):
    """PPO's clipped surrogate on the minibatch's advantages rescaled to mean 0, std 1. (n,).
    A minibatch of one is left as it is, as SB3 does (a short first batch on Hopper has them)."""
    if len(advantages) > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    return plain_clipped_policy_loss(log_probs, old_log_probs, advantages, clip_eps)


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--algo" not in argv or argv[argv.index("--algo") + 1] != "err":
        print("advantage_norm.py: pass --algo err (only err's update normalises)", file=sys.stderr)
        sys.exit(2)
    pa.clipped_policy_loss = normalised_clipped_policy_loss  # update_err looks it up per call
    sys.exit(pa.main(argv if "--label" in argv else [*argv, "--label", LABEL]))
