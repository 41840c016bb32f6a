"""Tune one (env, algo) on tuning seeds with Optuna, as the RL-Zoo does: a study in SQLite (so it
resumes, and several workers may share it), TPE sampling, and a median pruner that stops a trial
whose first seeds score worse than earlier trials did at the same point.  From the repository root:

    pip install -r bench/requirements-tune.txt
    python bench/tune.py --env Pendulum-v1 --algo err --seeds 0-5 --trials 40 --out runs/tune-pend

A trial samples options from SPACES[(env, algo)] and runs its seeds through bench/sweep.py (Ray,
one run per --cpus-per-run), --chunk seeds at a time, under DIR/trial-N.  A seed scores the env
steps of its confirmed solve; an unsolved run scores its budget plus 100 env steps for each point
its final sampled return lies below the threshold (a near miss ranks above a collapse).  The
objective, lower is better, is the mean over the seeds run so far, reported after each chunk to
the pruner.  Report seeds (CartPole 1000-1024, 2000-2009 elsewhere) are refused: a configuration
chosen here is measured on them once, afterwards (bench/sweep.py).  At the end, the best trials'
options are printed as policy_annealing.py flags.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from sweep import parse_seeds, run_dir_of  # noqa: E402

REPORT_SEEDS = set(range(1000, 1025)) | set(range(2000, 2010))
STEPS_PER_POINT = 100  # env steps added to an unsolved run's budget per point below the threshold


def pendulum_err(trial: optuna.Trial) -> dict:
    """err on Pendulum-v1 (200-step episodes): batch, epochs, horizon, step size, T, first sigma."""
    episodes = trial.suggest_categorical("num_groups", [2, 4, 8])
    minibatch = trial.suggest_categorical("minibatch_size", [32, 64, 128])
    return {
        "num-groups": episodes,
        "minibatches": max(1, episodes * 200 // minibatch),
        "optim-steps": trial.suggest_categorical("optim_steps", [5, 10, 20]),
        "lr": trial.suggest_float("lr", 3e-4, 3e-3, log=True),
        "lr-decay": trial.suggest_categorical("lr_decay", [True, False]),
        "gamma": trial.suggest_categorical("gamma", [0.9, 0.95, 0.98]),
        "gae-lambda": trial.suggest_categorical("gae_lambda", [0.8, 0.9, 0.95, 0.99]),
        "temperature": trial.suggest_float("temperature", 1e-3, 0.1, log=True),
        "max-grad-norm": trial.suggest_categorical("max_grad_norm", [0.2, 0.5, 1.0, 2.0]),
        "init-log-std": trial.suggest_float("init_log_std", -1.5, 0.5),
        "hidden": trial.suggest_categorical("hidden", [64, 128]),
        "ppo-clip": trial.suggest_categorical("ppo_clip", [0.1, 0.2, 0.3]),
    }


SPACES = {("Pendulum-v1", "err"): pendulum_err}
# The defaults of the day, the first trial of a new study: the bar the others must clear.
DEFAULTS = {("Pendulum-v1", "err"): dict(
    num_groups=4, minibatch_size=32, optim_steps=20, lr=3e-4, lr_decay=True, gamma=0.95,
    gae_lambda=0.9, temperature=0.08, max_grad_norm=0.5, init_log_std=0.0, hidden=128,
    ppo_clip=0.2)}  # fmt: skip


def flags(options: dict) -> list[str]:
    """policy_annealing.py flags: a held temperature is --temp-start and --temp-end."""
    argv = []
    for name, value in options.items():
        if name == "temperature":
            argv += ["--temp-start", str(value), "--temp-end", str(value)]
        elif isinstance(value, bool):
            argv.append(f"--{name}" if value else f"--no-{name}")
        else:
            argv += [f"--{name}", str(value)]
    return argv


def seed_score(record: dict) -> float:
    summary, config = record["summary"], record["config"]
    if summary["solved_env_steps"] is not None:
        return float(summary["solved_env_steps"])
    final = summary["final_eval"]["sampled"]["mean"]
    shortfall = max(0.0, summary["reward_threshold"] - final)
    return float(config["max_env_steps"] or summary["env_steps"]) + STEPS_PER_POINT * shortfall


def objective(trial: optuna.Trial, args) -> float:
    import optuna

    argv = flags(SPACES[(args.env, args.algo)](trial))
    out = Path(args.out) / f"trial-{trial.number}"
    trial.set_user_attr("flags", " ".join(argv))
    scores, chunks = [], range(0, len(args.seeds), args.chunk)
    for step, start in enumerate(chunks):
        chunk = args.seeds[start : start + args.chunk]
        sweep = [sys.executable, "bench/sweep.py", "--env", args.env, "--algo", args.algo,
                 "--seeds", ",".join(map(str, chunk)), "--out", str(out),
                 "--cpus-per-run", str(args.cpus_per_run), "--", *argv]  # fmt: skip
        result = subprocess.run(sweep, cwd=ROOT, capture_output=True, text=True)
        for seed in chunk:
            run = run_dir_of(out, dict(env=args.env, algo=args.algo, seed=seed)) / "experiment.json"
            record = json.loads(run.read_text()) if run.is_file() else {}
            summary = record.get("summary") or {}
            if summary.get("stopped_by") == "error":  # diverged (a non-finite loss): a failure
                raise optuna.TrialPruned(f"{run.parent.name}: {summary.get('error')}")
            if not summary.get("final_eval"):
                last = (result.stderr.strip().splitlines() or ["no stderr"])[-1]
                raise RuntimeError(f"{run.parent}: the run did not finish ({last})")
            scores.append(seed_score(record))
        trial.report(sum(scores) / len(scores), step)
        if step < len(chunks) - 1 and trial.should_prune():  # a trial with every seed completes
            raise optuna.TrialPruned()
    return sum(scores) / len(scores)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench/tune.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", required=True)
    parser.add_argument("--algo", required=True)
    parser.add_argument("--seeds", type=parse_seeds, required=True, help="tuning seeds: 0-5")
    parser.add_argument("--trials", type=int, default=40, help="trials this worker runs")
    parser.add_argument("--chunk", type=int, default=2, help="seeds a chunk (between prunings)")
    parser.add_argument("--cpus-per-run", type=float, default=1.0, help="Ray CPUs a run takes")
    parser.add_argument("--sampler-seed", type=int, default=0, help="TPE's (one per worker)")
    parser.add_argument("--out", required=True, help="the study (study.db) and its trials")
    args = parser.parse_args(argv)
    refusal = (
        f"no search space for {args.env} {args.algo}: add one to SPACES"
        if (args.env, args.algo) not in SPACES
        else "report seeds are measured once, not tuned on: pass tuning seeds"
        if REPORT_SEEDS & set(args.seeds)
        else None
    )
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    import optuna  # bench/requirements-tune.txt: the checks above need none of it

    Path(args.out).mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=f"{args.env}-{args.algo}",
        storage=f"sqlite:///{Path(args.out).resolve() / 'study.db'}",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(n_startup_trials=10, seed=args.sampler_seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    )
    if not study.trials:
        study.enqueue_trial(DEFAULTS[(args.env, args.algo)])
    study.optimize(lambda trial: objective(trial, args), n_trials=args.trials)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for trial in sorted(done, key=lambda t: t.value)[:5]:
        print(f"trial {trial.number}: {trial.value:,.0f}  {trial.user_attrs['flags']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
