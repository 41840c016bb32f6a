"""Where a peer run (bench/peer_sb3.py) keeps its --resume checkpoint, without Stable-Baselines3:
bench/sweep.py runs in the project's venv and must judge a peer's run directory by the same rule
as the peer that resumes it, or a truncated state.json is 'interrupted' to one and absent to the
other (and each rerun of the sweep asks for a --resume that the peer refuses)."""

from __future__ import annotations

import json
from pathlib import Path


def checkpoints(out: Path) -> list[Path]:
    """The checkpoint directories of a run, newest first: a kill between save_checkpoint's two
    renames leaves no checkpoint/ but a complete checkpoint.tmp (state.json is written last)."""
    return [out / "checkpoint", out / "checkpoint.tmp", out / "checkpoint.old"]


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint directory of a run, or None."""
    for saved in checkpoints(out):
        try:
            json.loads((saved / "state.json").read_text())
            return saved
        except (OSError, ValueError):  # absent, or killed while state.json was written
            continue
    return None
