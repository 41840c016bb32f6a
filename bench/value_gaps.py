r"""Does V's gap pick out the `value` updates that fall?  Runs CartPole value runs (any
policy_annealing flags, one per --seeds entry) and, before every update, takes V - target over
each episode's first 100 steps (`replay_update.value_residuals`; the runs themselves are
unchanged).  Over the updates on all-500 batches that follow an evaluation of 475 or more it
prints: the gap's spread over a batch's episodes, the quartiles of the batch means, how many of
those updates fell below 400, and how many falls came from the top quarter of gaps.

    # docs/experiments.md's figures: the previous value default, tuning seeds 10-15
    python bench/value_gaps.py --seeds 10 11 12 13 14 15 --policy-steps 0 --lr 3e-3 \
        --temp-start 0.5 --temp-end 0.5
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from replay_update import value_residuals  # noqa: E402  (bench/, this script's folder)

import annealing_config  # noqa: E402
import policy_annealing as pa  # noqa: E402


def run_gaps(flags: list[str], seed: int) -> list[dict]:
    """One run; per update, the batch's per-episode mean gap over steps 0-100, whether every
    episode reached 500, and the evaluations before and after it."""
    update, gaps = pa.UPDATES["value"], []

    def logged(agent, optimizer, batch, temperature, cfg, rng):
        residual, early = value_residuals(agent, batch, temperature, cfg), batch.mask[..., :100]
        per_episode = (residual[..., :100].sum(-1) / early.sum(-1)).flatten().tolist()
        gaps.append(dict(gap=per_episode, full=bool((batch.returns == 500).all())))
        return update(agent, optimizer, batch, temperature, cfg, rng)

    pa.UPDATES["value"] = logged
    try:
        with tempfile.TemporaryDirectory() as out:
            args = [*flags, "--algo", "value", "--seed", str(seed), "--quiet", "--out", out]
            history = pa.train(
                annealing_config.config_from_args(annealing_config.build_parser().parse_args(args)),
                Path(out),
            )[1]
    finally:
        pa.UPDATES["value"] = update
    evals = [record["eval_return"] for record in history["history"]]  # one per iteration
    return [
        dict(row, before=before, after=after)
        for row, before, after in zip(gaps[1:], evals[:-1], evals[1:], strict=True)
    ]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    ours, flags = parser.parse_known_args(argv)
    rows = [row for seed in ours.seeds for row in run_gaps(flags, seed)]
    chosen = [row for row in rows if row["full"] and row["before"] >= 475]
    means = sorted(statistics.mean(row["gap"]) for row in chosen)
    spread = statistics.median(statistics.pstdev(row["gap"]) for row in chosen)
    falls = [statistics.mean(row["gap"]) for row in chosen if row["after"] < 400]
    top = means[3 * len(means) // 4]
    print(f"{len(chosen)} updates on all-500 batches after an evaluation >= 475")
    print(f"gap over a batch's episodes: median standard deviation {spread:.2f}")
    quartiles = ", ".join(f"{q:+.2f}" for q in statistics.quantiles(means, n=4))
    print(f"batch means: quartiles {quartiles}, range {means[0]:+.2f} to {means[-1]:+.2f}")
    print(f"{len(falls)} fell below 400; their gaps {sorted(round(g, 2) for g in falls)}")
    print(f"falls from the top quarter of gaps: {sum(g >= top for g in falls)} of {len(falls)}")


if __name__ == "__main__":
    main(sys.argv[1:])
