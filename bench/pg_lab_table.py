"""The PG lab's table: evaluation return (mean ± std over seeds) at 2k, 5k and 10k env steps, and
the final 100-episode evaluation, per row (--label, else --algo) of the runs given.

    python bench/pg_lab_table.py runs/pg-lab/*/experiment.json
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import report  # noqa: E402

STEPS = (2_000, 5_000, 10_000)


def main(paths):
    runs = report.load_runs(paths)
    print("| run | seeds | " + " | ".join(f"eval return at {s // 1000}k" for s in STEPS)
          + " | final, 100 sampled episodes | final, greedy |")  # fmt: skip
    print("|---|---|" + "---|" * (len(STEPS) + 2))
    for (_env, label), members in report.cells(runs).items():
        curves = [
            np.array([(r["env_steps"], r["eval_return"]) for r in run["history"]
                      if r["eval_return"] is not None], dtype=float)
            for run in members
        ]  # fmt: skip
        # the last evaluation before each mark: what a user stopping there would have
        at = [[c[c[:, 0] <= s, 1][-1] if (c[:, 0] <= s).any() else np.nan for c in curves]
              for s in STEPS]  # fmt: skip
        final = {mode: [run["summary"]["final_eval"][mode]["mean"] for run in members]
                 for mode in ("sampled", "greedy")}  # fmt: skip
        cells = [f"{np.nanmean(v):.0f} ± {np.nanstd(v):.0f}" for v in [*at, *final.values()]]
        print(f"| {label} | {len(members)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
