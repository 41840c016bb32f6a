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
import importlib
import importlib.metadata
import inspect
import io
import json
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "policy-annealing-checkpoint", 1


class UserError(Exception):
    """Bad input: reported as one line on stderr, no traceback."""


# ---- the env ------------------------------------------------------------------------------------


def make_env(cfg, video_dir: Path | None = None) -> gym.Env:
    """The env of --env and --env-kwargs, refused in one line unless its actions are Discrete or a
    flat Box and its observations a flat Box.  With --render and a video_dir, its episodes are
    shown in a window (--render human) or recorded into video_dir/videos (--render video)."""
    mode = {"human": "human", "video": "rgb_array"}.get(cfg.render) if video_dir else None
    spec = env_spec(cfg.env)
    if "mujoco" in str(spec.entry_point):
        warn_once_per_mujoco_warning()
    try:
        env = gym.make(cfg.env, **cfg.env_kwargs)
    except TypeError as error:  # gym.make's answer to a keyword the env does not take, or a value
        raise UserError(bad_env_kwargs(cfg, spec, error)) from None
    except gym.error.Error as error:  # a registered env that cannot be made (a missing package)
        raise UserError(f"--env {cfg.env}: {error}") from None
    actions, observations = env.action_space, env.observation_space
    flat_box = isinstance(actions, gym.spaces.Box) and len(actions.shape) == 1
    if not (isinstance(actions, gym.spaces.Discrete) or flat_box):
        raise UserError(f"--env {cfg.env} has {actions} actions; it needs Discrete or a flat Box")
    if not (isinstance(observations, gym.spaces.Box) and len(observations.shape) == 1):
        raise UserError(
            f"--env {cfg.env} has {observations} observations; it needs a flat Box observation"
        )
    refuse_an_unreachable_target(cfg, actions)
    if cfg.init_log_std and not flat_box:
        raise UserError(f"--init-log-std sets a Gaussian's sigma; drop it for {actions} actions")
    if mode and mode not in env.metadata.get("render_modes", []):
        raise UserError(f"--env {cfg.env} cannot --render {cfg.render}; drop --render")
    if mode:  # the same env again, now rendering
        env.close()
        env = gym.make(cfg.env, render_mode=mode, **cfg.env_kwargs)
    bounds = np.isfinite(np.r_[actions.low, actions.high]) if flat_box else np.array([True])
    if not (bounds.all() or not bounds.any()):  # a tanh squash needs both ends (see Agent)
        raise UserError(f"--env {cfg.env} has {actions} actions; it needs all bounds or none")
    if mode == "rgb_array":
        try:
            env = gym.wrappers.RecordVideo(
                env, str(video_dir / "videos"), episode_trigger=lambda _: True, disable_logger=True
            )
        except gym.error.DependencyNotInstalled as error:
            raise UserError(f"--render video: {error}") from None
    return env


MUJOCO_WARNINGS: set[str] = set()  # those shown, once each


def warn_once_per_mujoco_warning() -> None:
    """MuJoCo's C library prints a warning each time it compiles a model that has one (4.x: the
    'settotalmass' of gymnasium's HalfCheetah XML), and appends it to MUJOCO_LOG.TXT in the
    working directory: a run makes 115 envs, so 115 lines at its start and a file left behind.
    Its Python hook replaces both: each distinct warning once on stderr, nothing on disk."""
    import mujoco  # only for envs that need it (gymnasium's MuJoCo envs import it anyway)

    def warn(message: str) -> None:
        if message not in MUJOCO_WARNINGS:
            MUJOCO_WARNINGS.add(message)
            print(f"MuJoCo: {message}", file=sys.stderr)

    mujoco.set_mju_user_warning(warn)


def env_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """--env's registration, or one line: an unknown id, or module:id (as gym.make reads it, the
    module registers id) whose module cannot be imported."""
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise UserError(
                f"--env {env_id}: cannot import {module} ({error}); pass module:id with a module "
                "on the Python path that registers id"
            ) from None
    try:
        return gym.spec(name)
    except gym.error.Error as error:
        raise UserError(
            f"unknown env '{env_id}' ({error}); pass a registered id such as CartPole-v1, "
            "LunarLander-v3 or Tree-v0"
        ) from None


def bad_env_kwargs(cfg, spec: gym.envs.registration.EnvSpec, error: TypeError) -> str:
    """What is wrong with --env-kwargs: the keywords the env does not take, named beside those it
    does, else (a bad value) the env's own complaint."""
    creator = spec.entry_point
    try:
        if isinstance(creator, str):
            creator = gym.envs.registration.load_env_creator(creator)
        parameters = list(inspect.signature(creator).parameters.values())
    except (ImportError, AttributeError, TypeError, ValueError):  # a signature cannot be read
        parameters = [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    takes = [p.name for p in parameters if p.kind in named and p.name != "render_mode"]
    takes.append("max_episode_steps")  # gym.make's own
    unknown = [repr(name) for name in cfg.env_kwargs if name not in (*takes, "render_mode")]
    if unknown and all(p.kind != inspect.Parameter.VAR_KEYWORD for p in parameters):
        return (
            f"--env-kwargs: {cfg.env} takes no keyword {', '.join(unknown)}; it takes "
            f"{', '.join(takes)}"
        )
    complaint = str(error).split(" was raised from the environment creator")[0]
    return f"bad --env-kwargs for {cfg.env} ({complaint})"


def default_target_entropy(cfg) -> float:
    """--target-entropy auto, nats a step.  Discrete(n): the entropy of 0.9 on one action and 0.1
    spread over the rest (ALF's default; SAC-discrete's 0.98 log n is nearly the uniform law's,
    which only T = inf reaches).  A Box: SAC's -dim(A) on actions scaled to [-1, 1], so on a
    bounded Box's own scale -dim(A) + sum log half_range (a differential entropy)."""
    env = make_env(dataclasses.replace(cfg, target_entropy=0.0, render=None))
    actions = env.action_space
    env.close()
    if isinstance(actions, gym.spaces.Box):
        bounded = np.isfinite(actions.low).all()  # all bounds or none (make_env)
        half_ranges = (actions.high - actions.low) / 2 if bounded else np.ones(actions.shape)
        return float(np.log(half_ranges.astype(np.float64)).sum() - actions.shape[0])
    if actions.n < 2:
        raise UserError(f"--target-entropy auto: {actions} has no entropy to target; drop it")
    return float(-0.9 * np.log(0.9) - 0.1 * np.log(0.1 / (actions.n - 1)))


def refuse_an_unreachable_target(cfg, actions: gym.Space) -> None:
    """--target-entropy (and its end) strictly inside the entropies a step the policy can have
    (the uniform law's needs T = inf): Discrete(n)'s lie in [0, log n), a bounded Box's below
    the uniform law's sum log(high - low), a Box without bounds' between the Gaussian's at the
    smallest and the largest sigma (-5 < log sigma < 2, see bounded_log_std); a differential
    entropy may be negative."""
    if not cfg.target_entropy:
        return
    if isinstance(actions, gym.spaces.Discrete):
        low, high = 0.0, float(np.log(actions.n))
    elif np.isfinite(actions.low).all():
        low, high = -np.inf, float(np.log(actions.high - actions.low).sum())
    else:
        gaussian = 0.5 * (1 + np.log(2 * np.pi))  # a unit Gaussian's entropy: + log sigma
        low, high = (actions.shape[0] * (log_std + gaussian) for log_std in (-5, 2))
    for name in ("target_entropy", "target_entropy_end"):
        value = getattr(cfg, name)
        if value and not low < value < high:
            flag = f"--{name.replace('_', '-')}"
            raise UserError(
                f"{flag} {value:g} cannot be reached: {actions} allows {low:.3g} to {high:.3g} "
                "nats a step; pass one inside"
            )


# gymnasium gives Pendulum-v1 no reward threshold; -200 is the usual "solved" line for it.
THRESHOLDS = {"Pendulum-v1": -200.0}


def reward_threshold(env: gym.Env) -> float | None:
    """The env's gymnasium reward threshold, else THRESHOLDS', else None (never solved)."""
    spec = env.spec
    given = spec.reward_threshold if spec else None
    return given if given is not None or not spec else THRESHOLDS.get(spec.id)


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


def shapes_of(state_dict: dict) -> dict:
    return {name: list(tensor.shape) for name, tensor in state_dict.items()}


def save_checkpoint(path, cfg, agent_state: dict, optimizer_state: dict, state: dict) -> None:
    """The networks, the optimizer, the run's counters and generators, and the config (so that
    a checkpoint alone can be loaded and evaluated)."""
    config = {name: value for name, value in dataclasses.asdict(cfg).items() if name != "resume"}
    checkpoint = dict(format=CHECKPOINT_FORMAT, format_version=CHECKPOINT_VERSION, env=cfg.env)
    checkpoint.update(env_kwargs=cfg.env_kwargs, algo=cfg.algo, shapes=shapes_of(agent_state))
    checkpoint.update(agent=agent_state, optimizer=optimizer_state, state=state, config=config)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    write_atomic(Path(path), buffer.getvalue())


def checkpoint_file(path) -> Path:
    """A checkpoint's path: a run directory stands for the checkpoint.pt inside it."""
    path = Path(path)
    return path / "checkpoint.pt" if path.is_dir() else path


def load_checkpoint(path, flag: str = "--load-model", shapes: dict | None = None) -> dict:
    """Load with weights_only=True; every way a file can be wrong is a UserError naming `flag`.
    With `shapes` (an agent's), the policy (and normaliser) must fit them; a value network may
    differ or be absent.  A checkpoint from before configs were saved in it takes the config of
    the experiment.json beside it."""
    path = checkpoint_file(path)
    if path.name == "checkpoint.pt" and path.parent.is_dir() and not path.exists():
        raise UserError(f"{flag} {path.parent}: no checkpoint.pt there; pass a run directory")
    if not path.is_file():
        raise UserError(f"{flag} {path}: no such file; pass a checkpoint.pt from a run directory")
    try:
        checkpoint = torch.load(path, weights_only=True)
    except Exception:  # truncated zip, pickle garbage, foreign object...
        raise UserError(
            f"{flag} {path}: cannot be read as a checkpoint; the file is corrupt or truncated"
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

    if shapes is not None and policy(shapes) != policy(checkpoint["shapes"]):
        raise UserError(
            f"{flag} {path}: its network (trained on {checkpoint['env']}) does not fit this env, "
            f"--hidden and --no-obs-norm; load it with --env {checkpoint['env']} and the flags it "
            "was trained with"
        )
    if "config" not in checkpoint:  # written before checkpoints held their config
        checkpoint["config"] = read_experiment(path.parent, flag)["config"]
    return checkpoint


def load_policy(agent: nn.Module, path) -> None:
    """The networks of the checkpoint at `path` into `agent`, whose policy (and normaliser) they
    must fit; its value network, if any, only where it fits too."""
    saved = load_checkpoint(path, shapes=shapes_of(agent.state_dict()))
    agent.load_state_dict(saved["agent"], strict=False)


def read_experiment(run_dir: Path, flag: str) -> dict:
    """DIR/experiment.json, or one line saying why it cannot be read."""
    try:
        return json.loads((Path(run_dir) / "experiment.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"{flag}: {run_dir}/experiment.json is missing or not JSON") from None


def run_directory(cfg) -> Path:
    """--resume DIR, or --out (default runs/<env>-<algo>-s<seed>-<timestamp>/), never silently
    over an earlier run, into a file, or into a folder of other things (such as runs/ itself)."""
    if cfg.resume:  # checked by saved_config
        return Path(cfg.resume)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    env = re.sub(r"[^A-Za-z0-9._-]+", "_", cfg.env)  # module:Env-v0, ALE/Pong-v5: one safe name
    run_dir = Path(cfg.out or f"runs/{env}-{cfg.algo}-s{cfg.seed}-{stamp}")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file; pass a directory for the run")
    if (run_dir / "experiment.json").exists() and not cfg.overwrite:
        raise UserError(
            f"--out {run_dir} already holds a run; pass --resume {run_dir} to continue it, "
            "--overwrite to replace it, or another --out"
        )

    def own(name: str) -> bool:  # a file a run writes
        return name in ("experiment.json", "checkpoint.pt", "videos") or name.startswith(EVENTS)

    if run_dir.is_dir() and not all(own(entry.name) for entry in run_dir.iterdir()):
        raise UserError(f"--out {run_dir} holds other files; pass a new or empty directory")
    if cfg.overwrite:  # no file of the replaced run may pass for one of the new run's
        (run_dir / "checkpoint.pt").unlink(missing_ok=True)
        shutil.rmtree(run_dir / "videos", ignore_errors=True)
        for events in run_dir.glob(f"{EVENTS}*"):
            events.unlink()
    make_directory(run_dir, "--out")
    return run_dir


def make_directory(path: Path, flag: str) -> None:
    """mkdir -p, or one line saying why not (a file on the way, no permission, a name too long);
    a refusal leaves none of the parents it made."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]  # deepest first
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        for folder in missing:
            with contextlib.suppress(OSError):
                folder.rmdir()
        file = next((parent for parent in path.parents if parent.is_file()), None)
        why = f"{file} is a file" if file else error.strerror or str(error)
        raise UserError(
            f"{flag} {path} cannot be created ({why}); pass a directory path you can write to"
        ) from None


EVENTS = "events.out.tfevents."  # --tensorboard's files (SummaryWriter names them so)


def check_tensorboard() -> None:
    """--tensorboard: refused in one line, before anything is written, without its package."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UserError(
            "--tensorboard needs the tensorboard package: pip install tensorboard (or "
            "pip install -e '.[tensorboard]'), or drop --tensorboard"
        ) from None


RESUME_FLAGS = ("iterations", "max_env_steps", "max_minutes", "resume", "render", "quiet")


def saved_config(given: dict) -> dict:
    """--resume DIR: the config saved in DIR/experiment.json, once DIR is checked to hold a run
    and the command line to change only --iterations, --max-env-steps and --max-minutes (to
    extend it), --render and --quiet (how this process shows it)."""
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
    return read_experiment(run_dir, "--resume")["config"]


# ---- the record of a run ------------------------------------------------------------------------


def solves(record: dict, threshold: float | None) -> bool:
    """Solved means confirmed: an evaluation reached the env's threshold and --confirm-episodes
    fresh episodes of the same policy did too.  A lucky evaluation alone does not count."""
    confirmed = record.get("confirm_return")  # None: no crossing (or an old run's record)
    return None not in (threshold, confirmed) and confirmed >= threshold


class Run:
    """One run directory during training, and the bookkeeping around the method: the directory
    (a warm start from --load-model is checked before it is made), the evaluation envs, the
    generators of env seeds and actions, --resume's restore, the training and evaluation
    seconds, why the run stops, `record` of each iteration (both files rewritten), `finish`."""

    def __init__(self, cfg, out, agent: nn.Module, optimizer: Optimizer):
        if cfg.load_model and not cfg.resume:  # a warm start, checked before anything is written
            load_policy(agent, cfg.load_model)  # V too, when one fits
        self.dir = run_directory(dataclasses.replace(cfg, out=str(out or cfg.out)))
        self.cfg = cfg = dataclasses.replace(cfg, out=str(self.dir))
        self.error, self.seconds, self.resumed_from = None, 0.0, None
        self.writer = None  # --tensorboard's, made at the first record
        # --eval-episodes envs (with --render, each evaluation's first is shown or recorded),
        # and --confirm-episodes more where the env has a threshold to confirm
        self.eval_envs = make_envs(cfg, cfg.eval_episodes, self.dir)
        self.threshold = threshold = reward_threshold(self.eval_envs[0])
        self.confirm_envs = make_envs(cfg, cfg.confirm_episodes if threshold is not None else 0)
        self.checkpoint_path = self.dir / "checkpoint.pt"
        self.experiment_path = self.dir / "experiment.json"
        self.seed_rng = np.random.default_rng(cfg.seed)  # env seeds of training batches
        self.action_rng = torch.Generator().manual_seed(cfg.seed)  # actions, minibatch order
        self.state = {"iteration": 0, "env_steps": 0, "wall_time": 0.0, "eval_time": 0.0}
        if cfg.target_entropy:  # T adapts (next_temperature): the run's state holds it
            self.state["temperature"] = cfg.temp_start
        self.history = []
        if cfg.resume:
            self.restore(agent, optimizer)
        self.solved = next((record for record in self.history if solves(record, threshold)), None)
        packages = ("torch", "gymnasium", "numpy")
        versions = {name: importlib.metadata.version(name) for name in packages}
        config = {**dataclasses.asdict(cfg), "versions": versions}
        self.experiment = {"config": config, "history": self.history, "summary": {}}
        self.bar = ProgressBar(cfg, self.state)

    def restore(self, agent: nn.Module, optimizer: Optimizer) -> None:
        """--resume: the run goes on exactly where its checkpoint left it."""
        checkpoint = load_checkpoint(self.checkpoint_path, flag="--resume")
        agent.load_state_dict(checkpoint["agent"])
        try:
            optimizer.load_state_dict(checkpoint["optimizer"])
        except ValueError:  # e.g. one Adam group, from before --value-lr had its own
            old = f"--resume {self.cfg.resume}: its optimizer state is an older version's"
            raise UserError(f"{old}; rerun it with --out {self.cfg.resume} --overwrite") from None
        self.state.update(checkpoint["state"])
        self.resumed_from = {key: self.state[key] for key in ("wall_time", "eval_time")}
        self.seed_rng.bit_generator.state = self.state.pop("seed_rng")
        self.action_rng.set_state(self.state.pop("action_rng"))
        # the checkpoint decides: experiment.json may hold one record more (record's order)
        saved = read_experiment(self.dir, "--resume")["history"]
        self.history = saved[: self.state["iteration"]]

    def stop_reason(self) -> str | None:
        """Why the run stops before another iteration, if it does."""
        if self.cfg.stop_when_solved and self.solved:
            return "solved"
        return (
            "iterations" if self.state["iteration"] >= self.cfg.iterations else self.budget_spent()
        )

    def write_scalars(self, record: dict) -> None:
        """--tensorboard: the record's numbers (returns, loss, entropy, temperature, env steps,
        exact_kl...) as scalars at its env steps, flushed, so that `tensorboard --logdir runs`
        shows the run live.  The writer is made at the first record: a refused run writes no
        event file; a resumed one adds a file, its steps going on."""
        if not self.cfg.tensorboard:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.experiment_path.parent))
        for key, value in record.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                tag = f"returns/{key}" if key.endswith("_return") else f"charts/{key}"
                self.writer.add_scalar(tag, value, global_step=record["env_steps"])
        self.writer.flush()

    def budget_spent(self) -> str | None:
        """Which of --max-env-steps or --max-minutes (of training time, evaluation excluded) is
        used up, if one is."""
        steps, minutes = self.cfg.max_env_steps, self.cfg.max_minutes
        if 0 < steps <= self.state["env_steps"]:
            return "env-step budget"
        return "time budget" if 0 < 60 * minutes <= self.state["wall_time"] else None

    @contextlib.contextmanager
    def training(self):  # the seconds of this iteration's sampling and update
        start = time.perf_counter()
        yield
        self.seconds = time.perf_counter() - start

    @contextlib.contextmanager
    def evaluating(self):  # evaluation's seconds are counted apart
        start = time.perf_counter()
        yield
        self.state["eval_time"] += time.perf_counter() - start

    @contextlib.contextmanager
    def ending(self):
        """An interrupt or a non-finite loss ends the run; the checkpoint keeps the last whole
        iteration."""
        try:
            yield
        except Interrupted:
            self.error = "interrupted"
        except FloatingPointError as exc:
            self.error = f"{exc} at iteration {self.state['iteration'] + 1}; checkpoint.pt keeps "
            self.error += "the one before. Lower --lr or --optim-steps, or raise --temp-start "
            self.error += "(--temp-min with --target-entropy)"

    def record(self, agent: nn.Module, optimizer: Optimizer, steps: int, **measured) -> None:
        """The iteration counts from here on: `steps` env steps, the seconds of `training`, and
        what was measured.  experiment.json is written first: if the process dies between the
        two writes, the checkpoint is one iteration behind, and resuming from it drops the extra
        record (see restore), so history and checkpoint always agree.  Signals wait until both
        files are whole."""
        wall_time = round(self.state["wall_time"] + self.seconds, 4)
        iteration, env_steps = self.state["iteration"] + 1, self.state["env_steps"] + steps
        record = dict(iteration=iteration, env_steps=env_steps, wall_time=wall_time, **measured)
        self.solved = self.solved or (record if solves(record, self.threshold) else None)
        with deferred_signals():
            self.history.append(record)
            self.state.update({key: record[key] for key in ("iteration", "env_steps", "wall_time")})
            self.state["last_temperature"] = record["temperature"]  # --validate's T
            write_json(self.experiment_path, self.experiment)
            rngs = dict(seed_rng=self.seed_rng.bit_generator.state,
                        action_rng=self.action_rng.get_state())  # fmt: skip
            state = {**self.state, **rngs}
            save_checkpoint(self.checkpoint_path, self.cfg, agent.state_dict(),
                            optimizer.state_dict(), state)  # fmt: skip
        self.write_scalars(record)
        self.bar.show(record)

    def finish(self, final_eval: dict | None) -> dict:
        """The summary: totals, why the run stopped, the confirmed solve (the first record that
        solves), every evaluation that crossed the threshold up to and including it, with its
        confirmation, and the final evaluation.  A signal now changes nothing."""
        with deferred_signals(then_raise=False):
            return self._finish(final_eval)

    def _finish(self, final_eval) -> dict:
        self.bar.close()
        solved, threshold, error = self.solved, self.threshold, self.error
        stop = self.stop_reason() if error is None else "error"
        stop = "interrupted" if error == "interrupted" else stop
        if self.writer is not None:
            self.writer.close()
        keys = ("iteration", "env_steps", "eval_return", "confirm_return")
        crossed = [record for record in self.history if record.get("confirm_return") is not None]
        summary = {
            "iterations": self.state["iteration"],
            "env_steps": self.state["env_steps"],
            "wall_time": round(self.state["wall_time"], 4),
            "eval_time": round(self.state["eval_time"], 4),
            "stopped_by": stop,
            "solved_iteration": solved["iteration"] if solved else None,
            "solved_env_steps": solved["env_steps"] if solved else None,
            "solved_wall_time": solved["wall_time"] if solved else None,
            "crossings": [{key: record[key] for key in keys} for record in crossed],
            "reward_threshold": threshold,
            "error": error,
            "resumed_from": self.resumed_from,  # this process's start: its seconds (print_outcome)
        }
        if final_eval is not None:
            summary["final_eval"] = final_eval
            if self.history and "exact_kl" in self.history[-1]:  # an enumerable env
                summary["exact_kl"] = self.history[-1]["exact_kl"]
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.experiment["summary"] = {**summary, "peak_rss_mb": round(peak_rss_mb, 1)}
        write_json(self.experiment_path, self.experiment)
        return self.experiment


class ProgressBar:
    """A bar toward what ends the run (env steps under --max-env-steps, training seconds under
    --max-minutes, iterations otherwise), showing the batch's return and entropy and the last
    evaluation; the loss's size says nothing about progress."""

    def __init__(self, cfg, state: dict):
        from tqdm import tqdm

        self.key, total, unit = "iteration", cfg.iterations, "it"
        if cfg.max_env_steps:
            self.key, total, unit = "env_steps", cfg.max_env_steps, " steps"
        elif cfg.max_minutes:
            self.key, total, unit = "wall_time", round(60 * cfg.max_minutes), " s"
        self.evaluation = "-"
        shape = "{l_bar}{bar}| {n_fmt}/{total_fmt}{unit} [{elapsed}<{remaining}{postfix}]"
        scale = self.key == "env_steps"
        self.bar = tqdm(total=total, initial=min(state[self.key], total), unit=unit,
                        unit_scale=scale, disable=cfg.quiet, bar_format=shape)  # fmt: skip

    def show(self, record: dict) -> None:
        if record["eval_return"] is not None:
            self.evaluation = f"{record['eval_return']:.1f}"
        self.bar.update(round(min(record[self.key], self.bar.total)) - self.bar.n)
        self.bar.set_postfix_str(
            f"return {record['train_return']:.1f}, entropy {record['entropy']:.2f}, "
            f"T {record['temperature']:.3g}, evaluation {self.evaluation}"
        )

    def close(self) -> None:
        self.bar.close()


def run_command(command, argv: list[str]) -> int:
    """The exit status of command(argv) -> (config, experiment, or None when nothing was
    trained): bad input is one line on stderr and 2; an interrupted run says what it kept."""
    started = time.perf_counter()
    try:
        cfg, experiment = command(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Interrupted:  # while starting, before train could keep anything
        print("interrupted while starting: no run was changed", file=sys.stderr)
        return 128 + STOP_SIGNALS[0]
    if experiment is None:
        return 0
    cfg.out = experiment["config"]["out"]
    return print_outcome(cfg, experiment["summary"], time.perf_counter() - started)


def print_outcome(cfg, summary: dict, total_seconds: float) -> int:
    """Print how a run ended and why (an error on stderr; with --quiet nothing else); its exit
    status.  The times: this process's (total_seconds in all), and after a resume the whole
    run's training and evaluation too."""
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
        before = summary.get("resumed_from")  # the run's seconds when this process took it up
        earlier = before or {"wall_time": 0.0, "eval_time": 0.0}
        training, evaluating = (summary[key] - earlier[key] for key in ("wall_time", "eval_time"))
        times = f"{total_seconds:.1f} s in all: {training:.1f} s training, {evaluating:.1f} s "
        times += "evaluating"
        if before is not None:
            times = f"this process {times}; the run since its start {summary['wall_time']:.1f} "
            times += f"s training, {summary['eval_time']:.1f} s evaluating"
        print(
            f"{cfg.env} {cfg.algo} seed {cfg.seed}: {solved}; stopped by {summary['stopped_by']} "
            f"after {summary['iterations']} iterations, {summary['env_steps']} env steps; final "
            f"return {final['sampled']['mean']:.1f} sampled, {final['greedy']['mean']:.1f} "
            f"greedy; {times} -> {run_dir}"
        )
    return 0


def print_validation(cfg, returns: np.ndarray, exact_kl: float | None) -> None:
    """--validate: the greedy returns of the saved policy, and the exact KL on an enumerable
    env."""
    print(
        f"{cfg.env}: greedy return {returns.mean():.1f} ± {returns.std():.1f} over "
        f"{len(returns)} episodes ({cfg.load_model})"
    )
    if exact_kl is not None:
        print(
            f"{cfg.env}: exact KL(p_policy || p_Boltzmann at T={cfg.temp_start:g}) = {exact_kl:.2e}"
        )


# ---- signals ------------------------------------------------------------------------------------


class Interrupted(Exception):
    """Raised where the run is once SIGINT or SIGTERM arrives, except inside deferred_signals."""


STOP_SIGNALS = []  # the signals received inside `stop_on_signals`
DEFERRING = []  # non-empty inside deferred_signals


def _stop(received: int, _frame) -> None:
    STOP_SIGNALS.append(received)
    if not DEFERRING and len(STOP_SIGNALS) == 1:  # a second Ctrl-C does not cut the wrap-up short
        raise Interrupted


@contextlib.contextmanager
def stop_on_signals():
    """While inside, SIGINT and SIGTERM raise Interrupted at the next Python step, wherever the
    run is (sampling, an optimizer step): the caller keeps what it had recorded."""
    STOP_SIGNALS.clear()  # a signal from an earlier run in this process does not stop this one
    handlers = {number: signal.signal(number, _stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def deferred_signals(then_raise: bool = True):
    """Files are never written by halves: the first signal, if it arrives inside, raises
    Interrupted only once the block is done (never, with then_raise=False)."""
    received = len(STOP_SIGNALS)
    DEFERRING.append(True)
    try:
        yield
    finally:
        DEFERRING.pop()
    if then_raise and not DEFERRING and received == 0 and STOP_SIGNALS:
        raise Interrupted
