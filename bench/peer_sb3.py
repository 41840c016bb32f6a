"""Peer baseline: Stable-Baselines3 PPO or SAC with the RL-Zoo's tuned hyperparameters, measured
with policy_annealing.py's protocol and written in its experiment.json schema, so that
`report.py report` tabulates both.

    .venv-peer/bin/python bench/peer_sb3.py --env CartPole-v1 --seed 1000 --out DIR
    .venv-peer/bin/python bench/peer_sb3.py --algo sac --env Pendulum-v1 --seed 1000 \\
        --max-minutes 30 --out DIR

PPO: CartPole-v1, LunarLander-v3, Pendulum-v1, MountainCarContinuous-v0, LunarLanderContinuous-v3,
Hopper-v5, HalfCheetah-v5, Walker2d-v5. SAC: Pendulum-v1, MountainCarContinuous-v0,
LunarLanderContinuous-v3, Hopper-v5, HalfCheetah-v5 (the zoo's MuJoCo SAC: SB3's defaults,
learning_starts 10000).

Protocol (the same as ours): 32 sampled-action episodes on fresh seeds in [2^31, 2^32) after every
PPO update, and for SAC every --eval-every env steps (default 1000 on Pendulum-v1, 5000 on
MountainCarContinuous-v0 and LunarLanderContinuous-v3: at the first point between two rollouts at
or past each multiple, i.e. after the gradient steps that follow it). Exceptions: PPO on
MountainCarContinuous-v0 updates every 8 env steps, so by default it too is evaluated every 1000
env steps; on MuJoCo both algorithms are evaluated every 100,000 env steps (episodes of up to 1,000
steps). --eval-every 0: after every update. A mean at or above the env's reward_threshold
(Pendulum-v1, which has none: -200, run_io.THRESHOLDS') is confirmed on 100 more fresh episodes,
and a confirmed crossing solves the run and stops it (with --keep-going, training and evaluations
go on to the budget, for `report.stays_solved`). Training seconds count sampling and updates only.
At the end, 100 episodes sampled and 100 greedy on the same seeds. Evaluation draws nothing from
the global RNGs, so it never changes training. Sampled actions are SB3's deterministic=False
actions drawn with the evaluation's own generator: a categorical draw; a Gaussian draw clipped to
the action bounds (PPO); tanh of a Gaussian draw, rescaled to the bounds (SAC). With gSDE each
episode has its own noise matrix, redrawn every sde_sample_freq steps, else (as training redraws it
once a rollout) every PPO n_steps or SAC train_freq steps. Greedy: the mean (PPO, clipped), tanh of
the mean (SAC), the argmax (discrete). Where the zoo sets `normalize` (VecNormalize), evaluation
sees observations normalised by the training statistics of that moment, frozen, and returns are the
env's raw rewards.

Resuming: with --resumable a checkpoint (model and optimisers, SAC's replay buffer, VecNormalize's
statistics, the history) replaces the last one at every evaluation, and --resume continues from it
with the env reset and the RNGs reseeded with --seed plus the env steps done (SB3 cannot restore
its envs' RNGs), so a resumed run is not bitwise the uninterrupted one; training seconds add up
across sessions. bench/sweep.py passes --resumable to every peer and --resume to an interrupted
one: SAC's 1M MuJoCo steps take ~3 hours here.

Budget: the zoo's n_timesteps, unless --max-env-steps and/or --max-minutes (training time) are
given; a run stops at the first budget spent. The zoo's `lin_X` schedules (SimpleLinearSchedule,
progress_remaining * X: X falling linearly to 0) run over the env-step budget, or over the
minutes when --max-minutes is the only budget given (as policy_annealing.py's schedules do).

Hyperparameters: DLR-RM/rl-baselines3-zoo at commit 22e3ff2 (2026-04-23, rl_zoo3 2.9.0a2),
hyperparams/ppo.yml and hyperparams/sac.yml, copied verbatim into ZOO (`!!float 5e5` written as
500_000); "Tuned" marks the entries the zoo marks "# Tuned". Each entry is turned into SB3's
arguments as rl_zoo3's ExperimentManager does: `lin_X` strings become the schedule above;
policy_kwargs and a string `normalize` are evaluated as Python with only `dict` and `nn` in
scope; `normalize` wraps the training envs in VecNormalize with the entry's gamma; noise_type
(normal or ornstein-uhlenbeck) with noise_std becomes SAC's action_noise (no entry here sets it:
the zoo's SAC MountainCarContinuous-v0 has used gSDE instead since 2019); the training envs are
make_vec_env's DummyVecEnv with Monitor, seeded with --seed, and --seed seeds the model (python,
numpy, torch, action space). Everything not set is SB3's default (PPO: MlpPolicy 64-64 tanh,
vf_coef 0.5, max_grad_norm 0.5; SAC: 256-256 ReLU, buffer 1M, batch 256, tau 0.005, gamma 0.99,
ent_coef auto, learning_starts 100, train_freq 1, gradient_steps 1). Not reproduced: the zoo's
SAC Pendulum-v1 entry has a commented-out ParallelTrainCallback (so not used by the zoo either);
PPO MountainCarContinuous-v0's batch_size 256 exceeds its 8-step rollout, so SB3 warns and
trains on the whole rollout as one batch, as in the zoo.
"""

import argparse
import importlib.metadata
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from peer_checkpoint import checkpoints, latest_checkpoint  # sweep.py judges by the same rule
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.vec_env import VecNormalize

# Verbatim from hyperparams/ppo.yml and sac.yml (the zoo's -v3 LunarLanders = its former -v2; its
# MuJoCo entries are for -v4 envs, run here on -v5: the same bodies and rewards, MuJoCo 4's engine).
ZOO = {
    "ppo": {
        "CartPole-v1": dict(  # Tuned
            n_envs=8,
            n_timesteps=100_000,
            policy="MlpPolicy",
            n_steps=32,
            batch_size=256,
            gae_lambda=0.8,
            gamma=0.98,
            n_epochs=20,
            ent_coef=0.0,
            learning_rate="lin_0.001",
            clip_range="lin_0.2",
        ),
        "LunarLander-v3": dict(
            n_envs=16,
            n_timesteps=1_000_000,
            policy="MlpPolicy",
            n_steps=1024,
            batch_size=64,
            gae_lambda=0.98,
            gamma=0.999,
            n_epochs=4,
            ent_coef=0.01,
        ),
        "Pendulum-v1": dict(  # Tuned
            n_envs=4,
            n_timesteps=100_000,
            policy="MlpPolicy",
            n_steps=1024,
            gae_lambda=0.95,
            gamma=0.9,
            n_epochs=10,
            ent_coef=0.0,
            learning_rate=1e-3,
            clip_range=0.2,
            use_sde=True,
            sde_sample_freq=4,
        ),
        "MountainCarContinuous-v0": dict(  # Tuned
            normalize=True,
            n_envs=1,
            n_timesteps=20_000,
            policy="MlpPolicy",
            batch_size=256,
            n_steps=8,
            gamma=0.9999,
            learning_rate=7.77e-05,
            ent_coef=0.00429,
            clip_range=0.1,
            n_epochs=10,
            gae_lambda=0.9,
            max_grad_norm=5,
            vf_coef=0.19,
            use_sde=True,
            policy_kwargs="dict(log_std_init=-3.29, ortho_init=False)",
        ),
        "LunarLanderContinuous-v3": dict(
            n_envs=16,
            n_timesteps=1_000_000,
            policy="MlpPolicy",
            n_steps=1024,
            batch_size=64,
            gae_lambda=0.98,
            gamma=0.999,
            n_epochs=4,
            ent_coef=0.01,
        ),
        "Hopper-v5": dict(  # the zoo's Hopper-v4
            normalize=True,
            n_envs=1,
            policy="MlpPolicy",
            n_timesteps=1_000_000,
            batch_size=32,
            n_steps=512,
            gamma=0.999,
            learning_rate=9.80828e-05,
            ent_coef=0.00229519,
            clip_range=0.2,
            n_epochs=5,
            gae_lambda=0.99,
            max_grad_norm=0.7,
            vf_coef=0.835671,
            policy_kwargs="dict(log_std_init=-2, ortho_init=False, activation_fn=nn.ReLU, "
            "net_arch=dict(pi=[256, 256], vf=[256, 256]))",
        ),
        "HalfCheetah-v5": dict(  # the zoo's HalfCheetah-v4
            normalize=True,
            n_envs=1,
            policy="MlpPolicy",
            n_timesteps=1_000_000,
            batch_size=64,
            n_steps=512,
            gamma=0.98,
            learning_rate=2.0633e-05,
            ent_coef=0.000401762,
            clip_range=0.1,
            n_epochs=20,
            gae_lambda=0.92,
            max_grad_norm=0.8,
            vf_coef=0.58096,
            policy_kwargs="dict(log_std_init=-2, ortho_init=False, activation_fn=nn.ReLU, "
            "net_arch=dict(pi=[256, 256], vf=[256, 256]))",
        ),
        "Walker2d-v5": dict(  # the zoo's Walker2d-v4 (no policy_kwargs: SB3's 64-64 tanh)
            normalize=True,
            n_envs=1,
            policy="MlpPolicy",
            n_timesteps=1_000_000,
            batch_size=32,
            n_steps=512,
            gamma=0.99,
            learning_rate=5.05041e-05,
            ent_coef=0.000585045,
            clip_range=0.1,
            n_epochs=20,
            gae_lambda=0.95,
            max_grad_norm=1,
            vf_coef=0.871923,
        ),
    },
    "sac": {
        "MountainCarContinuous-v0": dict(  # Tuned
            n_timesteps=50_000,
            policy="MlpPolicy",
            learning_rate=3e-4,
            buffer_size=50000,
            batch_size=512,
            ent_coef=0.1,
            train_freq=32,
            gradient_steps=32,
            gamma=0.9999,
            tau=0.01,
            learning_starts=0,
            use_sde=True,
            policy_kwargs="dict(log_std_init=-3.67, net_arch=[64, 64])",
        ),
        "Pendulum-v1": dict(
            n_timesteps=20000,
            policy="MlpPolicy",
            learning_rate=1e-3,
        ),
        "LunarLanderContinuous-v3": dict(
            n_timesteps=500_000,
            policy="MlpPolicy",
            batch_size=256,
            learning_rate="lin_7.3e-4",
            buffer_size=1000000,
            ent_coef="auto",
            gamma=0.99,
            tau=0.01,
            train_freq=1,
            gradient_steps=1,
            learning_starts=10000,
            policy_kwargs="dict(net_arch=[400, 300])",
        ),
        "Hopper-v5": dict(n_timesteps=1_000_000, policy="MlpPolicy", learning_starts=10000),
        "HalfCheetah-v5": dict(n_timesteps=1_000_000, policy="MlpPolicy", learning_starts=10000),
    },
}
ALGOS = {"ppo": PPO, "sac": SAC}
LABELS = {"ppo": "SB3 PPO (RL-Zoo)", "sac": "SB3 SAC (RL-Zoo)"}
# Evaluate every N env steps (0: after every update). PPO MountainCarContinuous-v0 updates every
# 8 env steps, and an evaluation takes about a second: 2,500 of them in its 20,000 steps.
# MuJoCo: 32 episodes of up to 1,000 steps every 100,000 env steps (ours: 10 every 25 batches).
MUJOCO_EVAL = {"Hopper-v5": 100_000, "HalfCheetah-v5": 100_000, "Walker2d-v5": 100_000}
EVAL_EVERY = {
    "ppo": {"MountainCarContinuous-v0": 1000} | MUJOCO_EVAL,
    "sac": {
        "Pendulum-v1": 1000,
        "MountainCarContinuous-v0": 5000,
        "LunarLanderContinuous-v3": 5000,
    }
    | MUJOCO_EVAL,
}
THRESHOLDS = {"Pendulum-v1": -200.0}  # run_io.THRESHOLDS: gymnasium gives Pendulum-v1 none
EVAL_EPISODES, CONFIRM_EPISODES, FINAL_EPISODES = 32, 100, 100
NOT_KWARGS = ("n_envs", "n_timesteps", "policy", "normalize", "noise_type", "noise_std")


def schedule(value):
    if isinstance(value, str) and value.startswith("lin_"):
        initial = float(value[4:])
        return lambda progress_remaining: progress_remaining * initial
    return value


def zoo_eval(text):
    """A zoo string such as "dict(net_arch=[400, 300])", evaluated with only dict and nn."""
    return eval(text, {"__builtins__": {}}, {"dict": dict, "nn": torch.nn})


def model_kwargs(zoo, action_space):
    """The zoo entry as the algorithm's keyword arguments, as rl_zoo3's ExperimentManager makes
    them (schedules, policy_kwargs, action noise). SB3 refuses any key it does not know."""
    kwargs = {k: v for k, v in zoo.items() if k not in NOT_KWARGS}
    for key in ("learning_rate", "clip_range"):
        if key in kwargs:
            kwargs[key] = schedule(kwargs[key])
    if isinstance(kwargs.get("policy_kwargs"), str):
        kwargs["policy_kwargs"] = zoo_eval(kwargs["policy_kwargs"])
    if zoo.get("noise_type"):
        noise_type, n = zoo["noise_type"].strip(), action_space.shape[0]
        noise = {"normal": NormalActionNoise, "ornstein-uhlenbeck": OrnsteinUhlenbeckActionNoise}
        kwargs["action_noise"] = noise[noise_type](np.zeros(n), zoo["noise_std"] * np.ones(n))
    return kwargs


def normalize_kwargs(zoo):
    """VecNormalize's arguments if the zoo entry normalizes (with the entry's gamma), else None."""
    normalize = zoo.get("normalize", False)
    if not normalize:
        return None
    if isinstance(normalize, str):  # e.g. "dict(norm_obs=False, norm_reward=True)"
        kwargs = zoo_eval(normalize)
    else:
        kwargs = dict(normalize) if isinstance(normalize, dict) else {}
    return kwargs | ({"gamma": zoo["gamma"]} if "gamma" in zoo else {})


class Actor:
    """The model's actions for `count` evaluation envs in lockstep, greedy or sampled (SB3's
    deterministic=False) with `generator`: nothing is drawn from the global RNGs."""

    def __init__(self, model, count, greedy, generator):
        self.model, self.count, self.greedy, self.generator = model, count, greedy, generator
        self.norm = model.get_vec_normalize_env()  # frozen: normalize_obs updates nothing
        self.space = model.action_space
        self.discrete = isinstance(self.space, gym.spaces.Discrete)
        if model.use_sde:  # training redraws gSDE's noise matrix every sde_sample_freq steps,
            rollout = model.n_steps if isinstance(model, PPO) else model.train_freq.frequency
            self.sde_period = model.sde_sample_freq if model.sde_sample_freq > 0 else rollout
            self.matrices = None  # else once a rollout

    def gaussian(self, mean, latent_sde, std_matrix, std, step, index):
        """mean + noise: gSDE's latent_sde @ (this env's matrix), else std * N(0, 1)."""
        if latent_sde is None:
            return mean + std * torch.randn(mean.shape, generator=self.generator)
        if step % self.sde_period == 0:
            shape = (self.count, *std_matrix.shape)
            self.matrices = std_matrix * torch.randn(shape, generator=self.generator)
        return mean + torch.bmm(latent_sde[:, None, :], self.matrices[index])[:, 0]

    def __call__(self, obs, index, step):
        if self.norm is not None:
            obs = self.norm.normalize_obs(obs)
        obs = torch.as_tensor(obs[index])
        model = self.model
        if isinstance(model, SAC):
            actor = model.actor
            mean, log_std, extra = actor.get_action_dist_params(obs)
            if self.greedy:
                gaussian = mean
            elif actor.use_sde:
                std_matrix = actor.action_dist.get_std(log_std)
                gaussian = self.gaussian(mean, extra["latent_sde"], std_matrix, None, step, index)
            else:
                gaussian = self.gaussian(mean, None, None, log_std.exp(), step, index)
            return model.policy.unscale_action(torch.tanh(gaussian).numpy())
        dist = model.policy.get_distribution(obs)
        if self.discrete:
            probs = dist.distribution.probs
            if self.greedy:
                return probs.argmax(1).tolist()
            return torch.multinomial(probs, 1, generator=self.generator)[:, 0].tolist()
        assert not model.policy.squash_output
        mean = dist.distribution.mean
        if self.greedy:
            actions = mean
        elif model.use_sde:
            std_matrix = model.policy.action_dist.get_std(model.policy.log_std)
            actions = self.gaussian(mean, dist._latent_sde, std_matrix, None, step, index)
        else:
            actions = self.gaussian(mean, None, None, dist.distribution.stddev, step, index)
        return np.clip(actions.numpy(), self.space.low, self.space.high)


def episodes(model, env_id, seed, stream, salt, count, greedy):
    """Returns of `count` episodes in plain gymnasium envs, stepped in lockstep, on seeds from
    default_rng([seed, stream, salt]) in [2^31, 2^32). Sampled actions use a private generator
    drawn from the same rng (as ours does), so evaluating never touches training's RNG."""
    rng = np.random.default_rng([seed, stream, salt])
    seeds = rng.integers(2**31, 2**32, size=count)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    act = Actor(model, count, greedy, generator)
    envs = [gym.make(env_id) for _ in range(count)]
    obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=False)])
    returns, active = np.zeros(count), np.ones(count, bool)
    step = 0
    while active.any():
        index = np.flatnonzero(active)
        with torch.no_grad():
            actions = act(obs, index, step)
        for i, action in zip(index, actions, strict=False):
            obs[i], reward, terminated, truncated, _ = envs[i].step(action)
            returns[i] += reward
            active[i] = not (terminated or truncated)
        step += 1
    for env in envs:
        env.close()
    return returns


class Evaluator(BaseCallback):
    """Evaluates between rollouts, once the policy has been updated on the last one: at the start
    of the next rollout and at the end of training (SB3 calls _on_rollout_end before the update,
    which would score the old policy); with eval_every > 0, only at the first rollout start at or
    past each multiple of eval_every env steps. Stops training at a confirmed solve (unless
    --keep-going) and when the training minutes are spent."""

    def __init__(self, args, threshold, eval_every, write, checkpoint=None):
        super().__init__()
        self.args, self.threshold, self.eval_every, self.write = args, threshold, eval_every, write
        self.history, self.crossings, self.solved = [], [], None
        self.next_eval, self.out_of_time, self.start, self.eval_time = eval_every, False, None, 0.0
        # training and evaluation seconds of the sessions before a --resume
        self.checkpoint, self.seconds_before, self.eval_time_before = checkpoint, 0.0, 0.0

    def training_seconds(self, now=None):
        """Seconds of sampling and updates up to `now` (perf_counter; default: this moment)."""
        if self.start is None:
            return self.seconds_before
        now = time.perf_counter() if now is None else now
        return self.seconds_before + now - self.start - self.eval_time

    def evaluated_here(self):
        """Whether the last record is at the present env step (a resumed run starts there)."""
        return bool(self.history) and self.history[-1]["env_steps"] == self.model.num_timesteps

    def _on_training_start(self):
        self.start, self.eval_time = time.perf_counter(), 0.0

    def _on_rollout_start(self):
        steps = self.model.num_timesteps
        if steps > 0 and steps >= self.next_eval and not self.evaluated_here():
            if self.eval_every:  # before evaluate(), whose checkpoint saves it
                self.next_eval = (steps // self.eval_every + 1) * self.eval_every
            self.evaluate()

    def _on_step(self):
        minutes = self.args.max_minutes
        self.out_of_time = bool(minutes) and self.training_seconds() >= 60 * minutes
        return not self.out_of_time and (self.solved is None or self.args.keep_going)

    def _on_training_end(self):
        if (self.solved is None or self.args.keep_going) and not self.evaluated_here():
            self.evaluate()

    def evaluate(self):
        entered = time.perf_counter()
        args, model, stream = self.args, self.model, len(self.history) + 1
        model.policy.set_training_mode(False)
        trained = self.training_seconds(entered)
        record = {
            "iteration": stream,
            "env_steps": int(model.num_timesteps),
            "wall_time": round(trained, 4),
            "eval_return": float(
                episodes(model, args.env, args.seed, stream, 1, EVAL_EPISODES, False).mean()
            ),
            "confirm_return": None,
        }
        if (
            self.solved is None
            and self.threshold is not None
            and record["eval_return"] >= self.threshold
        ):
            record["confirm_return"] = float(
                episodes(model, args.env, args.seed, stream, 2, CONFIRM_EPISODES, False).mean()
            )
            confirmed = record["confirm_return"] >= self.threshold
            self.crossings.append(
                {k: record[k] for k in ("iteration", "env_steps", "eval_return", "confirm_return")}
                | {"confirmed": confirmed}
            )
            if confirmed:
                self.solved = record
        self.history.append(record)
        self.write()
        if self.checkpoint is not None:
            self.checkpoint(self, trained, entered)
        self.eval_time += time.perf_counter() - entered


def save_checkpoint(evaluator, trained, entered):
    """Everything a --resume needs, written to checkpoint.tmp and then swapped in, so that a run
    killed at any point keeps a complete checkpoint (latest_checkpoint finds it). `trained`: the
    training seconds at the evaluation; `entered`: when the evaluation began."""
    model, out = evaluator.model, Path(evaluator.args.out)
    final, tmp, old = checkpoints(out)
    if latest_checkpoint(out) == tmp:  # killed between the renames: keep tmp, the newest, as final
        os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)  # left if killed before its removal: os.replace needs
    shutil.rmtree(tmp, ignore_errors=True)  # an empty or absent target
    tmp.mkdir()
    # without the minutes' progress closure, which would pickle the evaluator and model with it
    model.save(tmp / "model.zip", exclude=["_update_current_progress_remaining"])
    if hasattr(model, "replay_buffer"):
        model.save_replay_buffer(tmp / "replay_buffer.pkl")
    if isinstance(model.get_env(), VecNormalize):
        model.get_env().save(str(tmp / "vecnormalize.pkl"))
    state = {
        "env_steps": int(model.num_timesteps),
        "history": evaluator.history,
        "crossings": evaluator.crossings,
        "solved": evaluator.solved,
        "next_eval": evaluator.next_eval,
        "training_seconds": trained,
        "eval_seconds": evaluator.eval_time_before
        + evaluator.eval_time
        + time.perf_counter()
        - entered,
    }
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(saved, args, model, env, evaluator):
    """The model, its env and the evaluator's state as save_checkpoint left them."""
    state = json.loads((saved / "state.json").read_text())
    if isinstance(env, VecNormalize):
        env = VecNormalize.load(str(saved / "vecnormalize.pkl"), env.venv)
    model = ALGOS[args.algo].load(saved / "model.zip", env=env, device="cpu")
    if hasattr(model, "replay_buffer"):
        model.load_replay_buffer(saved / "replay_buffer.pkl")
    model.set_random_seed(args.seed + state["env_steps"])
    env.seed(args.seed + state["env_steps"])
    evaluator.history[:] = state["history"]
    evaluator.crossings[:] = state["crossings"]
    evaluator.solved, evaluator.next_eval = state["solved"], state["next_eval"]
    evaluator.seconds_before = state["training_seconds"]
    evaluator.eval_time_before = state["eval_seconds"]
    return model, env


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algo", default="ppo", choices=tuple(ZOO))
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--max-env-steps",
        type=int,
        help="env-step budget (default: the zoo's n_timesteps, unless --max-minutes alone)",
    )
    parser.add_argument(
        "--max-minutes", type=float, help="training-time budget (sampling and updates), minutes"
    )
    parser.add_argument(
        "--eval-every",
        type=int,
        help="evaluate every N env steps, 0: after every update (default: per env and algo, "
        "see the docstring)",
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="train to the budget after a confirmed solve, evaluating (does it stay solved?)",
    )
    parser.add_argument(
        "--resumable",
        action="store_true",
        help="save a checkpoint in --out at every evaluation (model, optimisers, replay buffer, "
        "VecNormalize statistics, history), so that --resume can continue the run",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint (implies --resumable); the "
        "continuation is reseeded with --seed plus the env steps done, so it is not bitwise the "
        "uninterrupted run, and an episode in progress at the checkpoint is lost",
    )
    args = parser.parse_args(argv)
    args.resumable = args.resumable or args.resume
    if args.resume and latest_checkpoint(Path(args.out)) is None:
        print(
            f"peer_sb3.py: no checkpoint in {args.out}/checkpoint to resume; start the run with "
            "--resumable",
            file=sys.stderr,
        )
        return 2
    if args.env not in ZOO[args.algo]:
        print(
            f"peer_sb3.py: unsupported env '{args.env}' for --algo {args.algo}; the zoo "
            f"hyperparameters here are for {', '.join(ZOO[args.algo])}",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(1)
    zoo = ZOO[args.algo][args.env]
    # The budgets: minutes alone have no env-step cap, and the schedules then run over them.
    budget = args.max_env_steps or (None if args.max_minutes else zoo["n_timesteps"])
    eval_every = args.eval_every
    if eval_every is None:
        eval_every = EVAL_EVERY.get(args.algo, {}).get(args.env, 0)
    threshold = gym.spec(args.env).reward_threshold
    threshold = THRESHOLDS.get(args.env) if threshold is None else threshold  # Walker2d: none
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    experiment = {
        "config": {
            "env": args.env,
            "algo": f"sb3-{args.algo}",
            "label": LABELS[args.algo],
            "seed": args.seed,
            "max_env_steps": budget,
            "max_minutes": args.max_minutes,
            "eval_every_env_steps": eval_every,
            "eval_episodes": EVAL_EPISODES,
            "confirm_episodes": CONFIRM_EPISODES,
            "final_eval_episodes": FINAL_EPISODES,
            "threads": 1,
            "hyperparameters": zoo,
            "versions": {
                name: importlib.metadata.version(name)
                for name in ("torch", "gymnasium", "numpy", "stable-baselines3")
            },
        },
        "history": [],
        "summary": {},
    }

    def write():
        tmp = out / "experiment.json.tmp"
        tmp.write_text(json.dumps(experiment, indent=1))
        os.replace(tmp, out / "experiment.json")

    # DummyVecEnv with Monitor, as the zoo
    env = make_vec_env(args.env, n_envs=zoo.get("n_envs", 1), seed=args.seed)
    if (norm := normalize_kwargs(zoo)) is not None:
        env = VecNormalize(env, **norm)
    kwargs = model_kwargs(zoo, env.action_space)
    model = ALGOS[args.algo](zoo["policy"], env, seed=args.seed, device="cpu", verbose=0, **kwargs)
    evaluator = Evaluator(
        args, threshold, eval_every, write, save_checkpoint if args.resumable else None
    )
    if args.resume:
        model, env = load_checkpoint(latest_checkpoint(out), args, model, env, evaluator)
    if budget is None:  # the schedules' progress: the training minutes spent

        def progress_by_minutes(num_timesteps, total_timesteps):
            spent = evaluator.training_seconds() / (60 * args.max_minutes)
            model._current_progress_remaining = max(0.0, 1.0 - spent)

        model._update_current_progress_remaining = progress_by_minutes
    experiment["history"] = evaluator.history
    error = None
    try:
        done = model.num_timesteps
        model.learn(
            total_timesteps=(budget or 2**62) - done,
            callback=evaluator,
            reset_num_timesteps=not done,
        )
    except KeyboardInterrupt:
        error = "interrupted"
    last, solved = (evaluator.history or [{}])[-1], evaluator.solved
    if error:
        stopped_by = error
    elif solved and not args.keep_going:
        stopped_by = "solved"
    else:
        stopped_by = "time budget" if evaluator.out_of_time else "env-step budget"
    summary = {
        "iterations": len(evaluator.history),
        "env_steps": last.get("env_steps", 0),
        "wall_time": last.get("wall_time", 0.0),
        "eval_time": round(evaluator.eval_time_before + evaluator.eval_time, 4),
        "stopped_by": stopped_by,
        "solved_iteration": solved["iteration"] if solved else None,
        "solved_env_steps": solved["env_steps"] if solved else None,
        "solved_wall_time": solved["wall_time"] if solved else None,
        "crossings": evaluator.crossings,
        "reward_threshold": threshold,
        "error": error,
    }
    if error is None:
        for saved in checkpoints(out):  # a finished run has nothing to resume (SAC's: ~100 MB)
            shutil.rmtree(saved, ignore_errors=True)
        model.policy.set_training_mode(False)
        summary["final_eval"] = {}
        for mode in ("sampled", "greedy"):
            returns = episodes(model, args.env, args.seed, 0, 1, FINAL_EPISODES, mode == "greedy")
            summary["final_eval"][mode] = {
                "mean": float(returns.mean()),
                "std": float(returns.std()),
                "entropy": None,
            }
    summary["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    experiment["summary"] = summary
    write()
    print(
        f"{args.env} sb3-{args.algo} seed {args.seed}: "
        + (
            f"solved at {solved['env_steps']:,} env steps, {solved['wall_time']:.1f} s"
            if solved
            else f"not solved in {summary['env_steps']:,} env steps, {summary['wall_time']:.1f} s"
        )
        + f"; stopped by {stopped_by} -> {out / 'experiment.json'}"
    )
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
