"""Tables and curves from experiment.json files: what is measured, not the method.

    python report.py report runs/bench/*/experiment.json -o bench/bench.md
    python report.py plot runs/bench/*/experiment.json -o bench/curves.png [--metric entropy]
        [--max-env-steps N]

Works on policy_annealing.py's runs and on bench/peer_sb3.py's, which write the same schema.
Solved means confirmed (see policy_annealing.py): summary.solved_env_steps is the first
evaluation whose crossing of the threshold a fresh >= 100-episode evaluation also reached.
A row (and a curve) pools the seeds of one env and run (--label, else --algo).  Warm-started runs
(--load-model) and interrupted or failed ones (summary.error) get rows of their own, flagged
[warm-started], [interrupted], [failed]; two runs of one seed in one row are refused.  Without
-o, plot writes runs/curves.png.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from scipy import stats


class UsageError(Exception):
    pass


def load_runs(paths):
    """The runs, refused when two of them are one seed of one row: pooled, they would count as
    two seeds (three runs of seed 0 once made "seeds 0–0, 2/3 solved")."""
    runs, rows = [], {}
    for path in paths:
        try:
            runs.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise UsageError(f"{path}: not a readable experiment.json ({error})") from None
        config = runs[-1]["config"]
        rows.setdefault((config["env"], run_label(runs[-1]), config["seed"]), []).append(path)
    if not runs:
        raise UsageError("no experiment.json given")
    for (env, label, seed), where in rows.items():
        if len(where) > 1:
            raise UsageError(
                f"{len(where)} runs of {env} {label} seed {seed} ({', '.join(map(str, where))}): "
                "give one run per env, run and seed"
            )
    return runs


def run_flags(run):
    """What sets a run apart from a fresh and complete one: it started from a saved policy, or
    it stopped early on a signal or an error."""
    error = (run.get("summary") or {}).get("error")
    flags = ["warm-started"] if run["config"].get("load_model") else []
    if error:
        flags.append("interrupted" if error == "interrupted" else "failed")
    return flags


def run_label(run):
    """The run column and the curve's name: --label, else --algo, and the flags in brackets, so
    that a flagged run is never pooled with fresh and complete ones."""
    label = run["config"].get("label") or run["config"]["algo"]
    return " ".join([label, *(f"[{flag}]" for flag in run_flags(run))])


def cells(runs):
    """{(env, label): [runs sorted by seed]}."""
    groups = {}
    for run in runs:
        groups.setdefault((run["config"]["env"], run_label(run)), []).append(run)
    return {
        key: sorted(members, key=lambda r: r["config"]["seed"])
        for key, members in sorted(groups.items())
    }


# ---- statistics ---------------------------------------------------------------------------------


def iqm(values, axis=-1):
    """Interquartile mean: the mean of the middle 50 % (Agarwal et al. 2021)."""
    return stats.trim_mean(values, 0.25, axis=axis)


def iqm_interval(values, confidence=0.95):
    """IQM and its percentile-bootstrap confidence interval (scipy.stats.bootstrap)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.ptp(values) == 0:
        return iqm(values), values.min(), values.max()
    result = stats.bootstrap(
        (values,),
        iqm,
        confidence_level=confidence,
        n_resamples=10_000,
        method="percentile",
        random_state=0,
    )
    return iqm(values), result.confidence_interval.low, result.confidence_interval.high


def cost_to_solve(run, key):
    """Env steps (key 'env_steps') or training seconds ('wall_time') to the confirmed solve; an
    unsolved run counts as everything it was given, not as missing: its env-step budget
    (--max-env-steps) when it had one, else what it used; its training seconds."""
    summary = run["summary"]
    solved = summary.get(f"solved_{key}")
    if solved is not None:
        return solved, True
    budget = (run["config"].get("max_env_steps") or 0) if key == "env_steps" else 0
    return max(summary[key], budget), False


def stays_solved(run):
    """After the first confirmed solve: the fraction of later evaluations (each of
    --eval-episodes sampled episodes) >= threshold, and the lowest."""
    summary, history = run["summary"], run["history"]
    if summary.get("solved_iteration") is None:
        return None
    later = [
        r["eval_return"]
        for r in history
        if r["iteration"] > summary["solved_iteration"] and r.get("eval_return") is not None
    ]
    if not later:
        return None
    return float(np.mean(np.array(later) >= summary["reward_threshold"])), float(min(later))


# ---- the table -------------------------------------------------------------------------------


def summarise(members, key, fmt):
    costs = [cost_to_solve(run, key) for run in members]
    values = [value for value, _ in costs]
    centre, low, high = iqm_interval(values)
    worst = int(np.argmax(values))
    worst_text = fmt(values[worst]) + ("" if costs[worst][1] else " unsolved")
    return (
        f"{fmt(np.median(values))} | {fmt(centre)} [{fmt(low)}–{fmt(high)}] | "
        f"{worst_text} (s{members[worst]['config']['seed']})"
    )


def report_table(runs):
    config = runs[0]["config"]
    episodes = (config.get("eval_episodes", 32), config.get("confirm_episodes", 100))
    rows = [
        f"Machine: {os.cpu_count()} CPU cores, torch threads per run {config.get('threads')};"
        " " + ", ".join(f"{k} {v}" for k, v in config.get("versions", {}).items()) + ".",
        f"Solved = confirmed: an evaluation (mean of {episodes[0]} sampled-action episodes on"
        " unseen seeds) reaches the env's reward threshold and a fresh evaluation of"
        f" {episodes[1]} more episodes of the same policy does too. An unsolved run counts as"
        " its whole env-step budget (marked unsolved); an error is listed under the table."
        " IQM = interquartile mean with a 95 % percentile-bootstrap CI (scipy.stats.bootstrap,"
        " 10,000 resamples). Runs started from a saved policy (--load-model) and runs that"
        " were interrupted or failed are in rows of their own, flagged [warm-started],"
        " [interrupted], [failed]. Seconds are training time (sampling + updates), evaluation"
        " excluded. Final return: 100 fresh episodes, median (worst seed). Stays solved: after"
        " the first confirmed solve (runs without --stop-when-solved), the share of later"
        " evaluations >= threshold, averaged over runs, and the lowest one.",
        "",
        "| env | run | seeds | solved | env steps: median | IQM [95% CI] | worst | training s:"
        " median | IQM [95% CI] | worst | final sampled | final greedy | stays solved |",
        "|" + "---|" * 13,
    ]
    for (env, label), members in cells(runs).items():
        members = [m for m in members if m.get("summary")]  # skip runs still going
        if not members:
            continue
        seeds = [m["config"]["seed"] for m in members]
        solved = sum(m["summary"].get("solved_env_steps") is not None for m in members)
        finals = {
            mode: [
                m["summary"]["final_eval"][mode]["mean"]
                for m in members
                if m["summary"].get("final_eval")
            ]
            for mode in ("sampled", "greedy")
        }
        final_text = {
            mode: f"{np.median(v):.1f} ({min(v):.1f})" if v else "-" for mode, v in finals.items()
        }
        after = [s for s in map(stays_solved, members) if s is not None]
        stay_text = (
            f"{np.mean([a for a, _ in after]):.0%}, min {min(m for _, m in after):.1f}"
            if after
            else "-"
        )
        rows.append(
            f"| {env} | {label} | {seeds[0]}–{seeds[-1]} | {solved}/{len(members)} | "
            f"{summarise(members, 'env_steps', lambda v: f'{v:,.0f}')} | "
            f"{summarise(members, 'wall_time', lambda v: f'{v:.1f}')} | "
            f"{final_text['sampled']} | {final_text['greedy']} | {stay_text} |"
        )
    errors = [
        f"- {run['config']['env']} {run_label(run)} seed {run['config']['seed']}: "
        f"{run['summary']['error']}"
        for run in runs
        if run.get("summary") and run["summary"].get("error")
    ]
    if errors:
        rows += ["", "Runs that ended in an error:", *errors]
    return "\n".join(rows) + "\n"


# ---- curves -------------------------------------------------------------------------------------


def mean_where_present(curves, grid):
    """Mean and std at each x of `grid` over the curves (arrays of (x, y) rows) that have data
    there: none is extended before its first point or past its last, where a run that stopped
    (solved, interrupted, still going) would otherwise hold its value and flatten the mean."""
    values = np.array(
        [np.interp(grid, c[:, 0], c[:, 1], left=np.nan, right=np.nan) for c in curves]
    )
    present = ~np.isnan(values)
    count = present.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):  # no curve at x: nan, not drawn
        mean = np.where(present, values, 0).sum(0) / count
        std = np.sqrt((np.where(present, values - mean, 0) ** 2).sum(0) / count)
    return mean, std


def plot_curves(runs, output, metric="eval_return", max_env_steps=None):
    """Learning curves against env steps: mean ± std across seeds of each (env, label), at
    each x over the runs that reached it; up to max_env_steps (a budget that the last batch of
    some runs overshot: past it, the few that did would make the mean jump)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({run["config"]["env"] for run in runs})
    fig, axes = plt.subplots(1, len(envs), figsize=(6 * len(envs), 4), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=False):
        for (cell_env, label), members in cells(runs).items():
            if cell_env != env:
                continue
            curves = [
                np.array(points, dtype=float)
                for points in (
                    [
                        (r["env_steps"], r[metric])
                        for r in run["history"]
                        if r.get(metric) is not None
                    ]
                    for run in members
                )
                if points
            ]
            if not curves:
                continue
            end = max(c[-1, 0] for c in curves)
            end = min(end, max_env_steps) if max_env_steps else end
            grid = np.linspace(min(c[0, 0] for c in curves), end, 200)
            mean, std = mean_where_present(curves, grid)
            (line,) = ax.plot(grid, mean, label=f"{label} (n={len(curves)})")
            ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        threshold = next(
            (
                r["summary"].get("reward_threshold")
                for r in runs
                if r["config"]["env"] == env and r.get("summary")
            ),
            None,
        )
        if threshold is not None and metric.endswith("return"):
            ax.axhline(threshold, color="gray", linestyle="--", linewidth=1)
        ax.set(title=env, xlabel="env steps", ylabel=metric.replace("_", " "))
        ax.legend()
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="report.py", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["report", "plot"])
    parser.add_argument("files", nargs="+")
    parser.add_argument("-o", "--output", help="report: default stdout; plot: runs/curves.png")
    parser.add_argument(
        "--metric",
        default="eval_return",
        choices=["eval_return", "train_return", "entropy", "exact_kl"],
    )
    parser.add_argument("--max-env-steps", type=int, help="plot: end the curves here")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.files)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.command == "plot":
        output = Path(args.output or "runs/curves.png")
        output.parent.mkdir(parents=True, exist_ok=True)
        plot_curves(runs, output, args.metric, args.max_env_steps)
        print(f"wrote {output}")
    elif args.output:
        Path(args.output).write_text(report_table(runs))
    else:
        print(report_table(runs), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
