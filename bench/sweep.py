"""A grid of runs (env x algo x seed, the same extra options) as Ray tasks, one run each, then the
report.  From the repository root:

    python bench/sweep.py --env Hopper-v5 --algo err --seeds 2000-2004 [--address HOST:PORT]
        [--out DIR] [--cpus-per-run 1] -- [policy_annealing options]

Without --address, the sweep starts a Ray of its own on this machine, one run per core (even if a
`ray start` cluster, or the address file a killed one left in /tmp/ray, is about); with it, the
sweep joins that Ray cluster as it is (`ray start --head --port PORT` on one node, `ray start
--address HEAD:PORT` on the others).  Every node must see this repository and --out at the same
paths (a shared filesystem): each task runs `python policy_annealing.py ... --out DIR/<env>-<algo>
-s<seed>` there, with this interpreter.  A run that fails is reported and does not stop the others.
Running the same command again skips the finished runs (and those that failed with an error of
their own, which a rerun repeats), resumes the interrupted ones (--resume), and starts the rest.
Then `report.py report DIR/*/experiment.json -o DIR/report.md`.  Exit status: 0 if every run of
the grid has finished, 1 if not, 2 on bad input.

--algo sb3-ppo (or sb3-sac) puts the SB3 peer in the grid: bench/peer_sb3.py with the RL-Zoo's
settings, run by .venv-peer's Python (`make -f bench/Makefile .venv-peer/.installed`).  It runs on
the budget and stopping rule that the options after -- give policy_annealing.py on that env (its
--max-env-steps, --max-minutes, --stop-when-solved with the per-env defaults; the zoo's budget if
neither budget is set); the other options are ours alone.  A peer saves a checkpoint at each of
its evaluations (--resumable), and an interrupted one resumes from the last (--resume: reseeded,
so not bitwise the uninterrupted run, as ours are); one killed before its first starts again.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from peer_checkpoint import latest_checkpoint  # noqa: E402  (the peer's own rule)

import annealing_config  # noqa: E402
import policy_annealing  # noqa: E402, F401  (registers Tree-v0, GridWorld-v0, QuadraticBandit-v0)
import run_io  # noqa: E402

FINISHED = {"solved", "iterations", "env-step budget", "time budget"}
ALGOS = ("grouped", "value", "err")
PEERS = ("sb3-ppo", "sb3-sac")  # bench/peer_sb3.py --algo ppo / sac
PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"
OWN = ("--env", "--algo", "--seed", "--out", "--resume", "--overwrite")  # the sweep sets these


class Refusal(Exception):
    """Bad input: one line on stderr, exit 2, nothing started."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise Refusal(f"{message} (see bench/sweep.py --help)")


def parse_seeds(text: str) -> list[int]:
    """'2000-2004' or '0,3,7' or a mix: '0-2,10'."""
    seeds = []
    for part in text.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        low, high = (int(match[1]), int(match[2] or match[1])) if match else (0, -1)
        if high < low:
            raise argparse.ArgumentTypeError(f"{text!r}: pass seeds as 2000-2004 or 0,3,7")
        seeds.extend(seed for seed in range(low, high + 1) if seed not in seeds)
    return seeds


def run_state(run_dir: Path) -> str:
    """What a run directory holds: 'new', 'finished', 'failed' (an error of the run's own, as a
    non-finite loss: a rerun repeats it) or 'interrupted' (iterations kept: resume it)."""
    try:
        record = json.loads((run_dir / "experiment.json").read_text())
    except (OSError, ValueError):
        return "new"
    summary = record.get("summary") or {}
    stopped_by = summary.get("stopped_by")
    if stopped_by in FINISHED:
        return "finished"
    if stopped_by == "error":
        return "failed"
    # ours: checkpoint.pt; a peer's: a complete checkpoint/ (or .tmp, .old), as the peer judges it
    peer_saved = latest_checkpoint(run_dir) is not None
    kept = record.get("history") and ((run_dir / "checkpoint.pt").is_file() or peer_saved)
    return "interrupted" if kept else "new"  # killed mid-write, or before a first iteration


def run_dir_of(out: Path, run: dict) -> Path:
    return out / f"{run['env'].replace(':', '-')}-{run['algo']}-s{run['seed']}"


def command(run: dict, out: Path, extra: list[str]) -> list[str] | None:
    """The command line for one run of the grid, or None if it has nothing left to do."""
    run_dir = run_dir_of(out, run)
    state = run_state(run_dir)
    if state in ("finished", "failed"):
        return None
    if run["algo"] in PEERS:
        return peer_command(run, run_dir, extra) + (["--resume"] if state == "interrupted" else [])
    if state == "interrupted":
        return [sys.executable, "policy_annealing.py", "--resume", str(run_dir), "--quiet"]
    grid_cell = ["--env", run["env"], "--algo", run["algo"], "--seed", str(run["seed"])]
    own = ["--out", str(run_dir), "--overwrite", "--quiet"]
    return [sys.executable, "policy_annealing.py", *grid_cell, *extra, *own]


def peer_command(run: dict, run_dir: Path, extra: list[str]) -> list[str]:
    """bench/peer_sb3.py on the budget and stopping rule that our runs of this env (the grid's
    algo run["like"]) have with `extra`, saving a checkpoint at each evaluation (--resumable)."""
    ours_argv = ["--env", run["env"], "--algo", run.get("like", "err"), *extra]
    ours = annealing_config.parse_command_line(ours_argv)
    budget = ["--max-env-steps", str(ours.max_env_steps)] if ours.max_env_steps else []
    budget += ["--max-minutes", str(ours.max_minutes)] if ours.max_minutes else []
    budget += [] if ours.stop_when_solved else ["--keep-going"]
    peer = ["--algo", run["algo"].removeprefix("sb3-"), "--env", run["env"]]
    return [str(PEER_PYTHON), "bench/peer_sb3.py", *peer, "--seed", str(run["seed"]),
            "--out", str(run_dir), *budget, "--resumable"]  # fmt: skip


def like(algos: list[str]) -> str:
    """Whose budget the grid's peers take: the grid's first algorithm of ours, else err's."""
    return next((algo for algo in algos if algo not in PEERS), "err")


def check_options(envs: list[str], algos: list[str], extra: list[str]) -> None:
    """Every (env, algo) of the grid with the extra options, checked as policy_annealing.py
    would check them, before any run starts."""
    for option in OWN:
        if any(arg == option or arg.startswith(option + "=") for arg in extra):
            raise Refusal(f"{option} is the sweep's to set; drop it after --")
    if any(algo in PEERS for algo in algos) and not PEER_PYTHON.is_file():
        raise Refusal("the SB3 peer needs .venv-peer: make -f bench/Makefile .venv-peer/.installed")
    for env in envs:
        for algo in algos:
            ours = like(algos) if algo in PEERS else algo  # a peer's env: peer_sb3.py checks it
            try:
                cfg = annealing_config.parse_command_line(["--env", env, "--algo", ours, *extra])
                run_io.check_env(cfg)
            except run_io.UserError as error:
                raise Refusal(f"--env {env} --algo {algo} -- {' '.join(extra)}: {error}") from None


def refuse_other_options(out: Path, extra: list[str]) -> None:
    """A run directory's name holds env, algo and seed, not the options after --: one --out holds
    one set of them (kept in DIR/sweep.json), or a rerun would count other options' runs as done."""
    record = out / "sweep.json"
    if record.is_file():
        before = json.loads(record.read_text())["options"]
        if before != extra:
            raise Refusal(f"{out} was swept with -- {' '.join(before)}; pass those, or a new --out")


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: pass a number > 0")
    return value


def run_task(argv: list[str]) -> tuple[int, str]:
    """One run, in its own process (its own torch threads): exit status, stderr's last line."""
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    return result.returncode, lines[-1] if lines else ""


def run_grid(todo: dict, args) -> int:
    """The runs of `todo` as Ray tasks, each reported as it ends; how many failed."""
    failures = 0
    if not todo:
        return 0
    import ray

    # "local", not None: ray.init() with no address joins the cluster named in /tmp/ray's
    # ray_current_cluster, which a killed `ray start` leaves behind (and then waits on it forever)
    ray.init(address=args.address or "local", include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=args.cpus_per_run)(run_task)
    pending = {task.remote(cmd): name for name, cmd in todo.items()}
    while pending:
        (ready,), _ = ray.wait(list(pending))
        name = pending.pop(ready)
        try:
            status, last_line = ray.get(ready)
        except Exception as error:  # the task itself died (a node lost): report, go on
            status, last_line = -1, f"{type(error).__name__}: {error}"
        failures += status != 0
        print(f"{name}: {'done' if status == 0 else f'FAILED ({status}): {last_line}'}")
    ray.shutdown()
    return failures


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, extra = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    parser = OneLineParser(prog="bench/sweep.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", nargs="+", required=True, help="gymnasium ids")
    parser.add_argument("--algo", nargs="+", required=True, choices=ALGOS + PEERS)
    parser.add_argument("--seeds", type=parse_seeds, required=True, help="2000-2004 or 0,3,7")
    parser.add_argument("--address", help="join this Ray cluster (HOST:PORT); default: a local Ray")
    parser.add_argument("--out", default="runs/sweep", help="one run directory per run, here")
    parser.add_argument("--cpus-per-run", type=positive, default=1.0, help="Ray CPUs a run takes")
    try:
        args = parser.parse_args(ours)
        check_options(args.env, args.algo, extra)
        out = Path(args.out).resolve()
        refuse_other_options(out, extra)
    except Refusal as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"options": extra}) + "\n")
    grid = [dict(env=e, algo=a, seed=s, like=like(args.algo)) for e in args.env for a in args.algo
            for s in args.seeds]  # fmt: skip
    todo = {f"{r['env']} {r['algo']} seed {r['seed']}": command(r, out, extra) for r in grid}
    todo = {name: cmd for name, cmd in todo.items() if cmd is not None}
    print(f"{len(grid)} runs in {out}: {len(grid) - len(todo)} done already, {len(todo)} to run")
    try:
        failures = run_grid(todo, args)
    except KeyboardInterrupt:  # Ray stops the runs; each keeps its finished iterations
        print(f"interrupted: rerun the same command to resume the runs in {out}", file=sys.stderr)
        return 130
    states = [run_state(run_dir_of(out, r)) for r in grid]
    files = sorted(str(p) for p in out.glob("*/experiment.json"))
    if files:
        report = [sys.executable, "report.py", "report", *files, "-o", str(out / "report.md")]
        subprocess.run(report, cwd=ROOT, check=False)
        print(f"report: {out / 'report.md'}")
    unfinished = sum(state != "finished" for state in states)
    print(f"{len(grid) - unfinished} of {len(grid)} runs finished")
    return 1 if unfinished or failures else 0


if __name__ == "__main__":
    sys.exit(main())
