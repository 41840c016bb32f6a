"""bench/sweep.py: a grid of runs as Ray tasks, through a real local Ray cluster's address; what a
rerun skips, resumes and starts; bad input in one line."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "bench"))
import sweep  # noqa: E402
import tune  # noqa: E402

import testing_helpers  # noqa: E402
from testing_helpers import SMOKE_ARGS, parsed_config, train, without_wall_time  # noqa: E402


def write_run(run_dir: Path, summary: dict | None, history=(), checkpoint=True):
    run_dir.mkdir(parents=True)
    record = {"config": {}, "history": list(history), "summary": summary}
    (run_dir / "experiment.json").write_text(json.dumps(record))
    if checkpoint:
        (run_dir / "checkpoint.pt").write_bytes(b"")


def test_seeds_parse_as_ranges_and_lists():
    assert sweep.parse_seeds("2000-2004") == [2000, 2001, 2002, 2003, 2004]
    assert sweep.parse_seeds("0,3,7-8") == [0, 3, 7, 8]
    assert sweep.parse_seeds("0,0-1") == [0, 1]  # one run per seed
    for bad in ("x", "5-3", "1-", "-2"):
        with pytest.raises(Exception, match="2000-2004"):
            sweep.parse_seeds(bad)


def test_a_rerun_skips_finished_and_failed_runs_resumes_interrupted_ones_starts_the_rest(tmp_path):
    runs = {s: dict(env="CartPole-v1", algo="grouped", seed=s) for s in range(6)}
    dirs = {s: sweep.run_dir_of(tmp_path, run) for s, run in runs.items()}
    write_run(dirs[0], {"stopped_by": "iterations"})
    write_run(dirs[1], {"stopped_by": "error", "error": "nan loss at iteration 3"})
    write_run(dirs[2], {"stopped_by": "interrupted"}, history=[{"iteration": 1}])
    write_run(dirs[3], None, history=[{"iteration": 1}])  # killed: no summary, iterations kept
    write_run(dirs[4], {"stopped_by": "interrupted"}, history=[], checkpoint=False)  # nothing kept
    states = [sweep.run_state(dirs[s]) for s in range(6)]
    assert states == ["finished", "failed", "interrupted", "interrupted", "new", "new"]
    commands = {s: sweep.command(run, tmp_path, ["--lr", "0.01"]) for s, run in runs.items()}
    assert commands[0] is None and commands[1] is None
    assert commands[2][1:] == ["policy_annealing.py", "--resume", str(dirs[2]), "--quiet"]
    assert commands[3][2:4] == ["--resume", str(dirs[3])]
    fresh = commands[5][1:]
    assert fresh[:7] == ["policy_annealing.py", "--env", "CartPole-v1", "--algo", "grouped",
                         "--seed", "5"]  # fmt: skip
    assert ["--lr", "0.01"] == fresh[7:9] and "--overwrite" in fresh and str(dirs[5]) in fresh


@pytest.mark.parametrize("stopped_by", ["solved", "iterations", "env-step budget", "time budget"])
def test_a_run_that_stopped_by_itself_is_finished_and_not_rerun(tmp_path, stopped_by):
    """Each way a run ends on its own (run_io.Run.stop_reason) is finished: a rerun of the sweep
    skips it.  Resumed, a budget-ended run would be refused (nothing to go on with) and the
    sweep would report it failed at every rerun."""
    run = dict(env="CartPole-v1", algo="grouped", seed=0)
    write_run(sweep.run_dir_of(tmp_path, run), {"stopped_by": stopped_by}, [{"iteration": 1}])
    assert sweep.run_state(sweep.run_dir_of(tmp_path, run)) == "finished"
    assert sweep.command(run, tmp_path, []) is None


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["--env", "CartPole-v1", "--algo", "grouped", "--seeds", "3-1"], "2000-2004"),
        (["--env", "CartPole-v1", "--algo", "ppo", "--seeds", "0"], "invalid choice"),
        (["--env", "CartPole-v1", "--algo", "grouped", "--seeds", "0", "--", "--seed", "3"],
         "--seed is the sweep's to set"),
        (["--env", "CartPole-v1", "--algo", "err", "--seeds", "0", "--", "--lr", "-1"], "--lr"),
        (["--env", "NoSuchEnv-v0", "--algo", "err", "--seeds", "0"], "unknown env"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_starts_nothing(capsys, tmp_path, argv, expect):
    split = argv.index("--") if "--" in argv else len(argv)  # --out goes before the run options
    assert sweep.main([*argv[:split], "--out", str(tmp_path / "sweep"), *argv[split:]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and expect in err, err
    assert not (tmp_path / "sweep").exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_grid_runs_through_a_real_ray_cluster_and_a_rerun_skips_it(tmp_path):
    ray = str(Path(sys.executable).parent / "ray")
    port, out = free_port(), tmp_path / "sweep"
    start = [
        ray,
        "start",
        "--head",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--num-cpus",
        "2",
        "--include-dashboard",
        "false",
        "--disable-usage-stats",
    ]
    # Ray 2.60 turns token authentication on for a new cluster; a token left in ~/.ray by another
    # Ray (a local ray.init) then makes the two disagree. The test cluster runs without it.
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    # --block: this cluster lives as long as its `ray start`; terminating it stops this cluster
    # alone (`ray stop` would stop every Ray of this user, a sweep of theirs included)
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    head = subprocess.Popen([*start, "--block"], **quiet, env=env)
    try:
        status = [ray, "status", "--address", f"127.0.0.1:{port}"]
        for _ in range(120):  # each call waits for the cluster a while: no sleep needed
            answer = subprocess.run(status, capture_output=True, text=True, timeout=60, env=env)
            if "CPU" in answer.stdout or head.poll() is not None:  # up, with its node
                break
        assert head.poll() is None and "CPU" in answer.stdout, answer.stdout + answer.stderr
        argv = [sys.executable, "bench/sweep.py", "--env", "CartPole-v1", "--algo", "grouped",
                "err", "--seeds", "0-1", "--address", f"127.0.0.1:{port}", "--out", str(out),
                "--", *SMOKE_ARGS]  # fmt: skip
        first = subprocess.run(argv, cwd=HERE, capture_output=True, text=True, timeout=300, env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        records = [json.loads(p.read_text()) for p in sorted(out.glob("*/experiment.json"))]
        assert len(records) == 4
        cells = {(r["config"]["algo"], r["config"]["seed"]) for r in records}
        assert cells == {(a, s) for a in ("grouped", "err") for s in (0, 1)}
        assert all(r["summary"]["stopped_by"] == "iterations" for r in records)
        assert (out / "report.md").is_file() and "4 of 4 runs finished" in first.stdout
        again = subprocess.run(argv, cwd=HERE, capture_output=True, text=True, timeout=300, env=env)
        assert again.returncode == 0 and "4 done already, 0 to run" in again.stdout, again.stdout
    finally:
        head.terminate()
        head.wait(timeout=120)


@pytest.mark.slow
def test_without_an_address_a_sweep_starts_its_own_ray_and_resumes_an_interrupted_run_exactly(
    tmp_path, monkeypatch
):
    """A killed `ray start` leaves its address in <ray temp>/ray_current_cluster; a bare ray.init()
    would join that dead cluster and wait on it. The sweep's local Ray ignores the file. A run of
    the grid that was interrupted (2 of its 3 iterations kept) is resumed, to the history of a run
    that never stopped."""
    out, extra = tmp_path / "sweep", [*SMOKE_ARGS, "--iterations", "3"]
    run = dict(env="CartPole-v1", algo="err", seed=0)
    run_argv = sweep.command(run, out, extra)[2:]  # what the sweep would start
    testing_helpers.interrupt_in_update(monkeypatch, "err", 3)
    stopped = train(parsed_config(run_argv), sweep.run_dir_of(out, run))
    assert stopped["summary"]["error"] == "interrupted" and len(stopped["history"]) == 2
    monkeypatch.undo()
    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # short: Ray's socket paths are
    try:  # limited to about 100 characters, and pytest's tmp_path is long
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
        env = dict(os.environ, RAY_TMPDIR=str(ray_tmp), RAY_AUTH_MODE="disabled")
        argv = [sys.executable, "bench/sweep.py", "--env", "CartPole-v1", "--algo", "err",
                "--seeds", "0", "--out", str(out), "--", *extra]  # fmt: skip
        result = subprocess.run(argv, cwd=HERE, capture_output=True, text=True, timeout=120,
                                env=env)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr[-2000:]
        assert "0 done already, 1 to run" in result.stdout, result.stdout
        assert "1 of 1 runs finished" in result.stdout
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    resumed = json.loads((sweep.run_dir_of(out, run) / "experiment.json").read_text())
    straight = train(parsed_config(run_argv), tmp_path / "straight")
    assert resumed["history"][:2] == stopped["history"]  # kept as written, wall times included
    assert resumed["summary"]["resumed_from"]["wall_time"] == stopped["summary"]["wall_time"]
    assert len(resumed["history"]) == 3
    assert without_wall_time(resumed["history"]) == without_wall_time(straight["history"])


def test_the_projects_own_envs_are_known_to_the_sweep():
    sweep.check_options(["GridWorld-v0", "Tree-v0", "QuadraticBandit-v0"], ["err"], [])


def test_a_rerun_with_other_options_into_the_same_out_is_refused(capsys, tmp_path):
    """The run directories are named by env, algo and seed only: other options would find the
    first sweep's runs "done already" and report them as theirs."""
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"options": ["--lr", "0.01"]}))
    argv = ["--env", "CartPole-v1", "--algo", "err", "--seeds", "0", "--out", str(out)]
    assert sweep.main([*argv, "--", "--lr", "0.02"]) == 2
    err = capsys.readouterr().err.strip()
    assert "was swept with -- --lr 0.01; pass those, or a new --out" in err and "\n" not in err
    assert sorted(p.name for p in out.iterdir()) == ["sweep.json"]


def test_a_peer_runs_on_our_budget_and_stopping_rule_and_resumes_its_checkpoint(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(sweep, "PEER_PYTHON", Path(sys.executable))  # a fresh clone has no venv

    def peer(env, extra, like="err", seed=7):
        run = dict(env=env, algo="sb3-ppo", seed=seed, like=like)
        return sweep.command(run, tmp_path, extra)

    pendulum = peer("Pendulum-v1", [])  # its defaults: 100k env steps, stop at a confirmed solve
    assert pendulum[:2] == [str(sweep.PEER_PYTHON), "bench/peer_sb3.py"]
    out = str(tmp_path / "Pendulum-v1-sb3-ppo-s7")
    assert pendulum[2:] == ["--algo", "ppo", "--env", "Pendulum-v1", "--seed", "7", "--out", out,
                            "--max-env-steps", "100000", "--resumable"]  # fmt: skip
    cartpole = peer("CartPole-v1", ["--max-env-steps", "5000"])  # CartPole's runs go on after it
    assert cartpole[-4:-1] == ["--max-env-steps", "5000", "--keep-going"]
    assert "--keep-going" not in peer("CartPole-v1", ["--stop-when-solved"])
    assert peer("LunarLander-v3", [])[-3:-1] == ["--max-minutes", "30.0"]
    # grouped's own option is ours alone; the peer takes grouped's budget
    assert peer("CartPole-v1", ["--trust-region", "0"], like="grouped")[-2] == "--keep-going"
    sweep.check_options(["CartPole-v1"], ["grouped", "sb3-ppo"], ["--trust-region", "0"])
    run_dir = tmp_path / "CartPole-v1-sb3-ppo-s7"
    cartpole_again = peer("CartPole-v1", [])
    write_run(run_dir, {"stopped_by": "interrupted"}, history=[{"iteration": 1}], checkpoint=False)
    assert peer("CartPole-v1", []) == cartpole_again  # no checkpoint: it starts again
    (run_dir / "checkpoint").mkdir()
    (run_dir / "checkpoint" / "state.json").write_text('{"trained')  # killed while writing it
    assert peer("CartPole-v1", []) == cartpole_again  # the peer would refuse --resume: start again
    (run_dir / "checkpoint.tmp").mkdir()  # killed between save_checkpoint's renames
    (run_dir / "checkpoint.tmp" / "state.json").write_text("{}")
    assert peer("CartPole-v1", []) == cartpole_again + ["--resume"]
    (run_dir / "checkpoint" / "state.json").write_text("{}")
    assert peer("CartPole-v1", []) == cartpole_again + ["--resume"]
    (run_dir / "experiment.json").write_text(json.dumps({"summary": {"stopped_by": "solved"}}))
    assert peer("CartPole-v1", []) is None


def test_a_peer_without_its_venv_is_refused_in_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "PEER_PYTHON", tmp_path / "no-venv" / "python")
    argv = ["--env", "CartPole-v1", "--algo", "err", "sb3-ppo", "--seeds", "0"]
    assert sweep.main([*argv, "--out", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err.strip()
    assert "make -f bench/Makefile .venv-peer/.installed" in err and "\n" not in err
    assert not (tmp_path / "sweep").exists()


# ---- bench/tune.py: the Optuna study's flags, scores and refusals (optuna itself not needed) ----


class FirstChoiceTrial:
    """A stand-in for optuna.Trial: the first choice of a categorical, the top of a range."""

    def suggest_categorical(self, name, choices):
        return choices[0]

    def suggest_float(self, name, low, high, log=False):
        return high


def test_tune_flags_are_policy_annealing_options_with_a_held_temperature():
    for space in tune.SPACES.values():
        options = space(FirstChoiceTrial())
        argv = ["--env", "Pendulum-v1", "--algo", "err", *tune.flags(options)]
        cfg = parsed_config(argv)
        assert cfg.temp_start == cfg.temp_end == options["temperature"]
        assert cfg.lr_decay is options["lr-decay"] and cfg.num_groups == options["num-groups"]
    argv = tune.flags({"lr-decay": False, "temperature": 0.02, "hidden": 128})
    held = ["--temp-start", "0.02", "--temp-end", "0.02"]
    assert argv == ["--no-lr-decay", *held, "--hidden", "128"]


def test_tune_scores_a_solve_by_its_env_steps_and_a_miss_by_its_budget_and_shortfall():
    def record(solved_at, final, budget=100_000):
        summary = dict(solved_env_steps=solved_at, env_steps=budget, reward_threshold=-200.0,
                       final_eval=dict(sampled=dict(mean=final)))  # fmt: skip
        return dict(summary=summary, config=dict(max_env_steps=budget))

    assert tune.seed_score(record(64_000, -150.0)) == 64_000
    assert tune.seed_score(record(None, -250.0)) == 100_000 + 50 * tune.STEPS_PER_POINT
    assert tune.seed_score(record(None, -190.0)) == 100_000  # above it, but never confirmed


class FixedTrial:
    """A stand-in for optuna.Trial that suggests the given values."""

    def __init__(self, values):
        self.values = values

    def suggest_categorical(self, name, choices):
        assert self.values[name] in choices
        return self.values[name]

    def suggest_float(self, name, low, high, log=False):
        assert low <= self.values[name] <= high
        return self.values[name]


def test_tune_first_trial_is_the_plain_command_of_today():
    for (env_id, algo), values in tune.DEFAULTS.items():
        plain = ["--env", env_id, "--algo", algo]
        options = tune.SPACES[(env_id, algo)](FixedTrial(values))
        assert parsed_config(plain + tune.flags(options)) == parsed_config(plain)


def test_tune_refuses_report_seeds_and_unknown_pairs_in_one_line_writing_nothing(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(tune, "objective", lambda *args: pytest.fail("a trial ran"))
    out = tmp_path / "study"
    for seeds, algo in (("0-1,2000", "err"), ("0-1", "grouped")):
        argv = ["--env", "Pendulum-v1", "--algo", algo, "--seeds", seeds, "--out", str(out)]
        assert tune.main(argv) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()
