"""Tests of report.py: one row per fresh, complete set of runs; duplicates refused; warm-started
and interrupted or failed runs in rows of their own; curves that end where their runs end;
outputs under bench/ or runs/."""

import json
import re
from pathlib import Path

import matplotlib.axes
import numpy as np
import pytest

import report

HERE = Path(__file__).parent


def experiment(seed, *, solved_at=None, error=None, load_model=None, label=None, returns=()):
    """A run's experiment.json as policy_annealing.py writes it, reduced to what report.py reads:
    an evaluation every 1,000 env steps with the given returns."""
    history = [
        {"iteration": i + 1, "env_steps": 1000 * (i + 1), "wall_time": i + 1.0, "eval_return": r}
        for i, r in enumerate(returns or (100.0, 200.0))
    ]
    final = {mode: {"mean": 480.0} for mode in ("sampled", "greedy")}
    return {
        "config": {
            "env": "CartPole-v1",
            "algo": "grouped",
            "label": label,
            "seed": seed,
            "load_model": load_model,
            "max_env_steps": 0,
        },
        "history": history,
        "summary": {
            "iterations": len(history),
            "env_steps": history[-1]["env_steps"],
            "wall_time": history[-1]["wall_time"],
            "solved_iteration": None if solved_at is None else solved_at // 1000,
            "solved_env_steps": solved_at,
            "solved_wall_time": None if solved_at is None else solved_at / 1000,
            "reward_threshold": 475.0,
            "error": error,
            "final_eval": None if error else final,
        },
    }


def write_runs(tmp_path, runs):
    paths = []
    for i, run in enumerate(runs):
        path = tmp_path / f"run{i}" / "experiment.json"
        path.parent.mkdir()
        path.write_text(json.dumps(run))
        paths.append(str(path))
    return paths


def table_rows(text):
    """{run column: (seeds column, solved column)} of the table's rows."""
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| CartPole")]
    return {row[1]: (row[2], row[3]) for row in rows}


def test_iqm_is_the_mean_of_the_middle_half_and_its_interval_a_percentile_bootstrap():
    """IQM trims a quarter at each end; the percentile bootstrap's interval holds IQMs of
    resamples, so it lies inside the data's range (the 'basic' interval, 2 IQM - percentiles,
    reaches below it here: -20.25)."""
    values = [1, 2, 3, 4, 5, 6, 7, 100]
    assert report.iqm(values) == 4.5  # the mean of 3, 4, 5, 6
    centre, low, high = report.iqm_interval(values)
    assert centre == 4.5 and min(values) <= low < centre < high <= max(values)


def test_an_unsolved_run_costs_its_budget_and_stays_solved_counts_only_after_the_solve():
    summary = dict(env_steps=20_000, solved_env_steps=None, wall_time=12.0, solved_wall_time=None)
    unsolved = {"config": {"max_env_steps": 50_000}, "summary": summary}
    assert report.cost_to_solve(unsolved, "env_steps") == (50_000, False)  # not what it used
    assert report.cost_to_solve(unsolved, "wall_time") == (12.0, False)
    solved = {"config": {"max_env_steps": 50_000}, "summary": {**summary, "solved_env_steps": 9}}
    assert report.cost_to_solve(solved, "env_steps") == (9, True)
    returns = [300.0, 480.0, 400.0, None, 480.0]  # solved at iteration 2; 4 not evaluated
    history = [dict(iteration=i, eval_return=r) for i, r in enumerate(returns, start=1)]
    run = {"summary": {"solved_iteration": 2, "reward_threshold": 475.0}, "history": history}
    assert report.stays_solved(run) == (0.5, 400.0)  # 400 and 480: not the solve's own 480


@pytest.mark.parametrize("command", ["report", "plot"])
def test_duplicate_runs_are_refused_in_one_line(capsys, tmp_path, command):
    """Three runs of seed 0 once made one row "seeds 0–0, 2/3 solved"."""
    runs = [experiment(0, solved_at=2000), experiment(0, solved_at=1000), experiment(0)]
    paths = write_runs(tmp_path, runs)
    out = tmp_path / "out"
    assert report.main([command, *paths, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: 3 runs of CartPole-v1 grouped seed 0") and "\n" not in err, err
    assert all(path in err for path in paths) and not out.exists()


def test_runs_of_one_seed_under_other_labels_are_not_duplicates(capsys, tmp_path):
    """`make -f bench/Makefile compare` runs --algo err three times per seed, under three labels."""
    runs = [experiment(0, label="err T=0.05"), experiment(0, label="PPO"), experiment(1)]
    assert report.main(["report", *write_runs(tmp_path, runs)]) == 0
    assert set(table_rows(capsys.readouterr().out)) == {"err T=0.05", "PPO", "grouped"}


def test_warm_started_interrupted_and_failed_runs_get_rows_of_their_own(capsys, tmp_path):
    runs = [
        experiment(0, solved_at=2000),
        experiment(1),
        experiment(2, solved_at=1000, load_model="runs/old/checkpoint.pt"),
        experiment(3, error="interrupted"),
        experiment(4, error="nan loss at iteration 3; checkpoint.pt keeps the one before"),
        experiment(5, solved_at=1000, load_model="runs/old/checkpoint.pt", error="interrupted"),
    ]
    assert report.main(["report", *write_runs(tmp_path, runs)]) == 0
    out = capsys.readouterr().out
    assert table_rows(out) == {
        "grouped": ("0–1", "1/2"),
        "grouped [warm-started]": ("2–2", "1/1"),
        "grouped [interrupted]": ("3–3", "0/1"),
        "grouped [failed]": ("4–4", "0/1"),
        "grouped [warm-started] [interrupted]": ("5–5", "1/1"),
    }
    assert "- CartPole-v1 grouped [failed] seed 4: nan loss at iteration 3" in out


def test_curves_average_only_the_runs_that_reach_each_x(tmp_path, monkeypatch):
    """A run that stopped at 2,000 env steps (solved, or interrupted) is not held at its last
    value out to 4,000: past its end the mean is that of the runs still going."""
    plotted = []
    real_plot = matplotlib.axes.Axes.plot

    def recording(self, x, y, *args, **kwargs):
        plotted.append((np.asarray(x), np.asarray(y)))
        return real_plot(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording)
    runs = [experiment(0, returns=(0.0, 0.0)), experiment(1, returns=(100.0,) * 4)]
    report.plot_curves(runs, tmp_path / "curves.png")
    ((x, mean),) = plotted
    assert x.max() == 4000
    assert np.allclose(mean[x <= 2000], 50.0) and np.allclose(mean[x > 2000], 100.0)
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_curves_end_at_the_budget_when_told(tmp_path, monkeypatch):
    """--max-env-steps: a last batch past the budget is not drawn (one run alone would be)."""
    plotted = []
    real_plot = matplotlib.axes.Axes.plot

    def recording(self, x, y, *args, **kwargs):
        plotted.append(np.asarray(x))
        return real_plot(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording)
    runs = [experiment(0, returns=(0.0, 0.0)), experiment(1, returns=(100.0,) * 4)]
    report.plot_curves(runs, tmp_path / "curves.png", max_env_steps=3000)
    assert plotted[0].max() == 3000


def test_plot_writes_under_runs_unless_told_where(capsys, tmp_path, monkeypatch):
    paths = write_runs(tmp_path, [experiment(0), experiment(1)])
    monkeypatch.chdir(tmp_path)
    assert report.main(["plot", *paths]) == 0
    assert (tmp_path / "runs" / "curves.png").is_file() and not (tmp_path / "curves.png").exists()
    assert "wrote runs/curves.png" in capsys.readouterr().out


def test_every_file_the_makefiles_write_lies_under_bench_or_runs():
    """toy_bandit.py --plot NAME and report.py -o NAME write where they are told: the Makefiles
    tell them bench/ or runs/ (runs/ is ignored by git; bench/ holds the published figures)."""
    text = (HERE / "Makefile").read_text() + (HERE / "bench" / "Makefile").read_text()
    outputs = re.findall(r" (?:-o|--plot|--json|--out) (\S+)", text)
    assert len(outputs) > 10 and "bench/bandit.png" in outputs
    assert all(re.match(r"(bench/|runs/|\$\$run\b)", output) for output in outputs), outputs
    assert "run=runs/tree/" in text  # where $$run points
