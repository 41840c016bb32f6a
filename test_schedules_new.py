"""Schedules: temperature and learning rate over the run's budget (merged into the main tests)."""

import json

import pytest

import policy_annealing as pa
import run_io
from test_run_io import one_line_error, run_main
from testing_helpers import SMOKE, config, train, without_wall_time

SCHEDULED = dict(SMOKE, temp_start=0.8, temp_end=0.1, lr_decay=True)


def recorded(history, key="temperature"):
    return [record[key] for record in history]


@pytest.mark.parametrize("budget", ["iterations", "max_env_steps", "max_minutes"])
def test_budget_progress_runs_from_0_to_1_over_the_budget_that_ends_the_run(budget):
    given = {"iterations": 11, "max_env_steps": 2000, "max_minutes": 2.0}[budget]
    cfg = config(**{"max_env_steps": 0, "max_minutes": 0, budget: given}, temp_start=0.5,
                 temp_end=0.05)  # fmt: skip
    start = dict(iteration=0, env_steps=0, wall_time=0.0)
    end = dict(iteration=10, env_steps=2000, wall_time=120.0)
    halfway = dict(iteration=5, env_steps=1000, wall_time=60.0)
    assert pa.budget_progress(cfg, start) == 0 and pa.budget_progress(cfg, end) == 1
    assert pa.budget_progress(cfg, halfway) == pytest.approx(0.5)
    assert pa.temperature_at(cfg, 0.0) == 0.5
    assert pa.temperature_at(cfg, 1.0) == pytest.approx(0.05, rel=1e-12)
    assert pa.temperature_at(cfg, 0.5) == pytest.approx((0.5 * 0.05) ** 0.5)  # geometric


def test_temperature_starts_at_temp_start_ends_at_temp_end_and_falls_monotonically(tmp_path):
    history = train(config(**{**SCHEDULED, "iterations": 6}), tmp_path)["history"]
    temperatures = recorded(history)
    assert len(temperatures) == 6 and temperatures[0] == 0.8
    assert temperatures[-1] == pytest.approx(0.1, rel=1e-12)
    assert all(a > b for a, b in zip(temperatures, temperatures[1:], strict=False))


def test_a_step_budget_sets_the_schedule_not_iterations_it_never_reaches(tmp_path):
    cfg = config(**{**SCHEDULED, "iterations": 1000}, max_env_steps=400)
    history = train(cfg, tmp_path)["history"]
    steps_before = [0] + recorded(history, "env_steps")[:-1]
    expected = [0.8 * (0.1 / 0.8) ** (steps / 400) for steps in steps_before]
    assert recorded(history) == pytest.approx(expected, rel=1e-12)
    assert history[-1]["env_steps"] >= 400 > history[-2]["env_steps"]  # the budget ended it
    final_state = {key: history[-1][key] for key in ("iteration", "env_steps", "wall_time")}
    assert pa.temperature_at(cfg, pa.budget_progress(cfg, final_state)) == pytest.approx(0.1)


def test_resume_continues_the_schedules_exactly(tmp_path, monkeypatch):
    cfg = config(**{**SCHEDULED, "iterations": 5}, out=str(tmp_path / "run"))
    straight = train(cfg, tmp_path / "straight")
    real_sample, calls = pa.sample_episodes, []

    def interrupted_in_the_fourth(*args, **kwargs):  # after three whole iterations
        calls.append(args[3] == cfg.group_size)  # training batches; evaluations use size 1
        if sum(calls) == 4:
            raise run_io.Interrupted
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(pa, "sample_episodes", interrupted_in_the_fourth)
    stopped = train(cfg, tmp_path / "run")
    assert stopped["summary"]["error"] == "interrupted" and len(stopped["history"]) == 3
    monkeypatch.setattr(pa, "sample_episodes", real_sample)
    resumed_cfg = pa.config_from_args(pa.build_parser().parse_args(["--resume", cfg.out]))
    resumed = train(resumed_cfg, tmp_path / "run")
    assert without_wall_time(resumed["history"]) == without_wall_time(straight["history"])
    assert recorded(resumed["history"])[-1] == pytest.approx(0.1, rel=1e-12)


def test_resume_refuses_a_budget_that_would_bend_a_schedule(capsys, tmp_path):
    run = tmp_path / "run"
    run_main(capsys, "--iterations", "2", "--num-groups", "2", "--group-size", "2",
             "--optim-steps", "1", "--eval-episodes", "2", "--confirm-episodes", "2",
             "--final-eval-episodes", "2", "--quiet", "--temp-start", "0.5", "--temp-end", "0.1",
             "--out", str(run))  # fmt: skip
    one_line_error(capsys, "--resume", str(run), "--iterations", "4", expect="--iterations 2")
    one_line_error(capsys, "--resume", str(run), "--max-env-steps", "99", expect="bend")
    history = json.loads((run / "experiment.json").read_text())["history"]
    assert len(history) == 2  # nothing was run or written by the refusals
