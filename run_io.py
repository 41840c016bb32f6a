"""Everything a run does besides the method, kept out of policy_annealing.py: the env it is given
(and the one-line refusal of an env it cannot use), the files it writes, the signals it hears and
what it prints at the end.  Nothing here touches the math.

A run directory holds experiment.json (config, history, summary) and checkpoint.pt (networks,
optimizer, random-generator states).  Both are rewritten atomically after every iteration, so an
interrupted or failed run keeps every iteration it finished, and `--resume DIR` continues it
exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.metadata
import io
import json
import os
import resource
import signal
import sys
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "policy-annealing-checkpoint", 1


class UserError(Exception):
    """Bad input: reported as one line on stderr, no traceback."""


# ---- the env ------------------------------------------------------------------------------------


def make_env(cfg, video_dir: Path | None = None) -> gym.Env:
    """The env of --env and --env-kwargs, refused in one line unless its actions are Discrete and
    its observations a flat Box.  With --render and a video_dir, its episodes are shown in a
    window (--render human) or recorded into video_dir/videos (--render video)."""
    mode = {"human": "human", "video": "rgb_array"}.get(cfg.render) if video_dir else None
    try:
        env = gym.make(cfg.env, **cfg.env_kwargs)
    except (gym.error.Error, TypeError) as error:
        raise UserError(
            f"unknown env '{cfg.env}' or bad --env-kwargs ({error}); pass a registered id such as "
            "CartPole-v1, LunarLander-v3 or Tree-v0"
        ) from None
    actions, observations = env.action_space, env.observation_space
    if not isinstance(actions, gym.spaces.Discrete):
        raise UserError(f"--env {cfg.env} has {actions} actions; Discrete actions are needed")
    if not (isinstance(observations, gym.spaces.Box) and len(observations.shape) == 1):
        raise UserError(
            f"--env {cfg.env} has {observations} observations; it needs a flat Box observation"
        )
    if mode and mode not in env.metadata.get("render_modes", []):
        raise UserError(f"--env {cfg.env} cannot --render {cfg.render}; drop --render")
    if mode:  # the same env again, now rendering
        env.close()
        env = gym.make(cfg.env, render_mode=mode, **cfg.env_kwargs)
    if mode == "rgb_array":
        try:
            env = gym.wrappers.RecordVideo(
                env, str(video_dir / "videos"), episode_trigger=lambda _: True, disable_logger=True
            )
        except gym.error.DependencyNotInstalled as error:
            raise UserError(f"--render video: {error}") from None
    return env


def make_envs(cfg, count: int, video_dir: Path | None = None) -> list[gym.Env]:
    """`count` envs for one batch of episodes; with --render and a video_dir, the first one is
    shown or recorded (see make_env), the rest run unseen."""
    return [make_env(cfg, None if i else video_dir) for i in range(count)]


def check_env(cfg) -> None:
    """Every refusal of make_env, --render's included, before anything is written."""
    with tempfile.TemporaryDirectory() as folder:  # RecordVideo makes its folder at once
        make_env(cfg, Path(folder) if cfg.render else None).close()


# ---- files --------------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file, then rename: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def write_json(path, obj) -> None:
    write_atomic(Path(path), json.dumps(obj, indent=1).encode())


def agent_shapes(agent) -> dict:
    return {name: list(tensor.shape) for name, tensor in agent.state_dict().items()}


def save_checkpoint(path, cfg, agent, optimizer, state: dict) -> None:
    checkpoint = dict(format=CHECKPOINT_FORMAT, format_version=CHECKPOINT_VERSION, env=cfg.env)
    checkpoint.update(env_kwargs=cfg.env_kwargs, algo=cfg.algo, shapes=agent_shapes(agent))
    checkpoint.update(agent=agent.state_dict(), optimizer=optimizer.state_dict(), state=state)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    write_atomic(Path(path), buffer.getvalue())


def load_checkpoint(path, agent=None, flag: str = "--load-model") -> dict:
    """Load with weights_only=True; every way a file can be wrong is a UserError naming `flag`.
    With `agent`, the policy (and normaliser) must fit its shapes; a value network may differ or
    be absent."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag} {path}: no such file; pass a checkpoint.pt from a run directory")
    try:
        checkpoint = torch.load(path, weights_only=True)
    except Exception as error:  # truncated zip, pickle garbage, foreign object...
        raise UserError(
            f"{flag} {path}: cannot be read as a checkpoint ({type(error).__name__}); the file is "
            "corrupt or truncated"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"{flag} {path}: not a policy-annealing checkpoint; pass the checkpoint.pt of a run "
            "directory"
        )
    if checkpoint.get("format_version") != CHECKPOINT_VERSION:
        version = checkpoint.get("format_version")
        raise UserError(f"{flag} {path}: format {version}, this version reads {CHECKPOINT_VERSION}")

    def policy(shapes):  # the value network may differ or be absent
        return {name: shape for name, shape in shapes.items() if not name.startswith("value.")}

    if agent is not None and policy(agent_shapes(agent)) != policy(checkpoint["shapes"]):
        raise UserError(
            f"{flag} {path}: its network (trained on {checkpoint['env']}) does not fit this env, "
            f"--hidden and --no-obs-norm; load it with --env {checkpoint['env']} and the flags it "
            "was trained with"
        )
    return checkpoint


def run_directory(cfg) -> Path:
    """--resume DIR, or --out (default runs/<env>-<algo>-s<seed>-<timestamp>/), never silently
    over an earlier run."""
    if cfg.resume:  # checked by resumed_config
        return Path(cfg.resume)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg.out or f"runs/{cfg.env}-{cfg.algo}-s{cfg.seed}-{stamp}")
    if (run_dir / "experiment.json").exists() and not cfg.overwrite:
        raise UserError(
            f"--out {run_dir} already holds a run; pass --resume {run_dir} to continue it, "
            "--overwrite to replace it, or another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


RESUME_FLAGS = ("iterations", "max_env_steps", "max_minutes", "resume", "render", "quiet")


def resumed_config(given: dict, fields: list) -> dict:
    """--resume DIR: the config of the run in DIR, with --iterations, --max-env-steps and
    --max-minutes (to extend it), --render and --quiet (how this process shows it) from the
    command line; any other flag is refused."""
    run_dir = Path(given["resume"])
    path = run_dir / "experiment.json"
    if not path.is_file():
        raise UserError(
            f"--resume {run_dir}: no experiment.json there; pass the directory of an earlier run"
        )
    if not (run_dir / "checkpoint.pt").is_file():
        raise UserError(
            f"--resume {run_dir}: no checkpoint.pt there (a run interrupted in its first "
            f"iteration keeps none); pass the directory of an earlier run, or rerun it with "
            f"--out {run_dir} --overwrite"
        )
    refused = sorted(f"--{name.replace('_', '-')}" for name in given if name not in RESUME_FLAGS)
    if refused:
        raise UserError(
            f"--resume continues a run with its own config; drop {' '.join(refused)} (only "
            "--iterations, --max-env-steps, --max-minutes, --render and --quiet may change)"
        )
    saved = json.loads(path.read_text())["config"]
    values = {name: saved[name] for name in fields if name in saved}
    values.update(render="", quiet=False)
    return {**values, **{name: given[name] for name in RESUME_FLAGS if name in given}}


# ---- the record of a run ------------------------------------------------------------------------


class Run:
    """One run directory during training.  It restores the run (--resume) or starts the agent
    from --load-model; `record` appends an iteration and rewrites both files; `finish` writes the
    summary.  `rngs` are the training's (numpy seed generator, torch generator)."""

    def __init__(self, cfg, run_dir: Path, agent, optimizer, rngs):
        from tqdm import tqdm

        self.cfg, self.agent, self.optimizer, self.rngs = cfg, agent, optimizer, rngs
        self.checkpoint_path = run_dir / "checkpoint.pt"
        self.experiment_path = run_dir / "experiment.json"
        self.state = {"iteration": 0, "env_steps": 0, "wall_time": 0.0}
        self.history = []
        run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.resume:
            checkpoint = load_checkpoint(self.checkpoint_path, agent, "--resume")
            agent.load_state_dict(checkpoint["agent"])
            try:
                optimizer.load_state_dict(checkpoint["optimizer"])
            except ValueError:  # e.g. one Adam group, from before --value-lr had its own
                raise UserError(
                    f"--resume {cfg.resume}: its optimizer state does not fit this version's "
                    f"(written by an older one); rerun it with the flags in its experiment.json "
                    f"and --out {cfg.resume} --overwrite"
                ) from None
            self.state = checkpoint["state"]
            rngs[0].bit_generator.state = self.state.pop("seed_rng")
            rngs[1].set_state(self.state.pop("action_rng"))
            # the checkpoint decides: experiment.json may hold one record more (record's order)
            saved = json.loads(self.experiment_path.read_text())["history"]
            self.history = saved[: self.state["iteration"]]
        elif cfg.load_model:
            checkpoint = load_checkpoint(cfg.load_model, agent)
            agent.load_state_dict(checkpoint["agent"], strict=False)  # value net taken if there
        packages = ("torch", "gymnasium", "numpy")
        versions = {name: importlib.metadata.version(name) for name in packages}
        config = {**dataclasses.asdict(cfg), "versions": versions}
        self.experiment = {"config": config, "history": self.history, "summary": {}}
        iterations, done = cfg.iterations, self.state["iteration"]
        self.bar = tqdm(total=iterations, initial=done, unit="it", disable=cfg.quiet)

    def record(self, record: dict) -> None:
        """The iteration counts from here on.  experiment.json is written first: if the process
        dies between the two writes, the checkpoint is one iteration behind, and resuming from it
        drops the extra record (see __init__), so history and checkpoint always agree."""
        self.history.append(record)
        self.state.update({key: record[key] for key in ("iteration", "env_steps", "wall_time")})
        write_json(self.experiment_path, self.experiment)
        rngs = {
            "seed_rng": self.rngs[0].bit_generator.state,
            "action_rng": self.rngs[1].get_state(),
        }
        state = {**self.state, **rngs}
        save_checkpoint(self.checkpoint_path, self.cfg, self.agent, self.optimizer, state)
        shown = {key: record[key] for key in ("train_return", "eval_return", "loss", "temperature")}
        shown = {key: "-" if value is None else f"{value:.3g}" for key, value in shown.items()}
        self.bar.update(1)
        self.bar.set_postfix(steps=record["env_steps"], refresh=False, **shown)

    def budget_spent(self) -> bool:
        """--max-env-steps or --max-minutes (of training time, evaluation excluded) used up."""
        steps, minutes = self.cfg.max_env_steps, self.cfg.max_minutes
        return 0 < steps <= self.state["env_steps"] or 0 < 60 * minutes <= self.state["wall_time"]

    def finish(self, solved: dict | None, threshold, error: str | None, final_eval) -> dict:
        """The summary: totals, the confirmed solve (`solved`, the first record that solves),
        every crossing of the threshold, confirmed or not, and the final evaluation."""
        self.bar.close()
        keys = ("iteration", "env_steps", "eval_return", "confirm_return")
        crossed = [record for record in self.history if record.get("confirm_return") is not None]
        summary = {
            "iterations": self.state["iteration"],
            "env_steps": self.state["env_steps"],
            "wall_time": round(self.state["wall_time"], 4),
            "solved_iteration": solved["iteration"] if solved else None,
            "solved_env_steps": solved["env_steps"] if solved else None,
            "solved_wall_time": solved["wall_time"] if solved else None,
            "crossings": [{key: record[key] for key in keys} for record in crossed],
            "reward_threshold": threshold,
            "error": error,
        }
        if final_eval is not None:
            summary["final_eval"] = final_eval
            if self.history and "exact_kl" in self.history[-1]:  # an enumerable env
                summary["exact_kl"] = self.history[-1]["exact_kl"]
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.experiment["summary"] = {**summary, "peak_rss_mb": round(peak_rss_mb, 1)}
        write_json(self.experiment_path, self.experiment)
        return self.experiment


def print_outcome(cfg, summary: dict) -> int:
    """Print how a run ended (an error on stderr; with --quiet nothing else); its exit status."""
    run_dir, error = cfg.out, summary["error"]
    if error == "interrupted":
        if summary["iterations"] == 0:
            message = (
                f"interrupted in the first iteration: nothing kept; rerun with --out {run_dir}"
            )
            print(f"{message} --overwrite", file=sys.stderr)
        else:
            message = f"interrupted: {summary['iterations']} iterations kept in {run_dir}"
            print(f"{message}; continue with --resume {run_dir}", file=sys.stderr)
        return 128 + STOP_SIGNALS[0]
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not cfg.quiet:
        final, steps = summary["final_eval"], summary["solved_env_steps"]
        solved = "not solved"
        if steps:
            solved = f"solved at {steps} env steps, {summary['solved_wall_time']:.1f} s"
        print(
            f"{cfg.env} {cfg.algo} seed {cfg.seed}: {solved}; final "
            f"return {final['sampled']['mean']:.1f} sampled, {final['greedy']['mean']:.1f} "
            f"greedy; {summary['env_steps']} env steps, {summary['wall_time']:.1f} s training -> "
            f"{run_dir}"
        )
    return 0


def validate_model(cfg, agent, evaluate) -> np.ndarray:
    """--validate: the greedy returns of the saved policy --load-model, loaded into `agent` and
    run by the module's own `evaluate`, printed with the exact KL for an enumerable env.  Nothing
    is trained and nothing written but, with --render video, the first episode's video."""
    agent.load_state_dict(load_checkpoint(cfg.load_model, agent)["agent"], strict=False)
    video_dir = Path(cfg.load_model).parent / "validate"
    envs = make_envs(cfg, cfg.eval_episodes, video_dir)
    returns, _ = evaluate(agent, envs, cfg, 0, greedy=True)
    envs[0].close()  # with --render video, this saves the video
    print(
        f"{cfg.env}: greedy return {returns.mean():.1f} ± {returns.std():.1f} over "
        f"{len(returns)} episodes ({cfg.load_model})"
    )
    exact_kl = getattr(envs[0].unwrapped, "exact_trajectory_kl", None)  # enumerable envs only
    if exact_kl and cfg.temp_start > 0:
        print(
            f"{cfg.env}: exact KL(p_policy || p_Boltzmann at T={cfg.temp_start:g}) = "
            f"{exact_kl(agent, cfg.temp_start):.2e}"
        )
    return returns


# ---- signals ------------------------------------------------------------------------------------


class Interrupted(Exception):
    """Raised between env or optimizer steps once SIGINT or SIGTERM arrived."""


STOP_SIGNALS = []  # the signals received inside `stop_on_signals`


def check_stop() -> None:
    """Called between steps, never mid-write: an interrupted run keeps every file whole."""
    if STOP_SIGNALS:
        raise Interrupted


@contextlib.contextmanager
def stop_on_signals():
    """While inside, SIGINT and SIGTERM are recorded for `check_stop` instead of killing."""
    STOP_SIGNALS.clear()  # a signal from an earlier run in this process does not stop this one
    handlers = {
        number: signal.signal(number, lambda received, _: STOP_SIGNALS.append(received))
        for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
