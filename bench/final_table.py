"""Final returns of fixed-budget runs (MuJoCo): per row, the final sampled return's median, IQM
with its 95 % bootstrap CI and worst seed, the greedy median, and training throughput.

    python bench/final_table.py runs/mujoco-report/*/experiment.json
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import report  # noqa: E402


def main(paths):
    runs = [run for run in report.load_runs(paths) if run.get("summary")]
    print("| env | run | seeds | env steps | final sampled: median | IQM [95% CI] | worst |"
          " final greedy: median | training s: median | env steps / training s |")  # fmt: skip
    print("|" + "---|" * 10)
    for (env, label), members in report.cells(runs).items():
        sampled = [m["summary"]["final_eval"]["sampled"]["mean"] for m in members]
        greedy = [m["summary"]["final_eval"]["greedy"]["mean"] for m in members]
        seconds = [m["summary"]["wall_time"] for m in members]
        steps = [m["summary"]["env_steps"] for m in members]
        centre, low, high = report.iqm_interval(sampled)
        worst = int(np.argmin(sampled))
        seeds = [m["config"]["seed"] for m in members]
        throughput = np.median(np.divide(steps, seconds))
        print(f"| {env} | {label} | {seeds[0]}–{seeds[-1]} | {np.median(steps):,.0f} | "
              f"{np.median(sampled):,.0f} | {centre:,.0f} [{low:,.0f}–{high:,.0f}] | "
              f"{sampled[worst]:,.0f} (s{seeds[worst]}) | {np.median(greedy):,.0f} | "
              f"{np.median(seconds):,.0f} | {throughput:,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
