"""Peer baseline: Stable-Baselines3 PPO with the RL-Zoo's tuned hyperparameters, measured
with policy_annealing.py's protocol and written in its experiment.json schema, so that
`report.py report` tabulates both.

    .venv-peer/bin/python bench/peer_sb3.py --env CartPole-v1 --seed 1000 --out DIR

Protocol (the same as ours): after every PPO update, 32 sampled-action episodes on fresh seeds
in [2^31, 2^32); a mean at or above the env's reward_threshold is confirmed on 100 more fresh
episodes, and a confirmed crossing solves the run and stops it (with --keep-going, training
and evaluations go on to the budget, for `report.stays_solved`). Training seconds count sampling
and updates only. At the end, 100 episodes sampled and 100 greedy on the same seeds.

Hyperparameters: DLR-RM/rl-baselines3-zoo, hyperparams/ppo.yml at commit 22e3ff2 (2026-04-23,
rl_zoo3 2.9.0a2); the CartPole-v1 entry is marked "# Tuned". Neither entry sets `normalize`
(no VecNormalize) or policy_kwargs, so everything else is SB3's PPO default (MlpPolicy 64-64
tanh, vf_coef 0.5, max_grad_norm 0.5). `lin_X` is the zoo's SimpleLinearSchedule:
progress_remaining * X, i.e. X falling linearly to 0 at the end of the budget.
"""

import argparse
import importlib.metadata
import json
import os
import resource
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

ZOO = {  # verbatim from hyperparams/ppo.yml (the zoo's LunarLander-v3 = its former -v2 entry)
    "CartPole-v1": dict(
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
}
EVAL_EPISODES, CONFIRM_EPISODES, FINAL_EPISODES = 32, 100, 100


def schedule(value):
    if isinstance(value, str) and value.startswith("lin_"):
        initial = float(value[4:])
        return lambda progress_remaining: progress_remaining * initial
    return value


def episodes(policy, env_id, seed, stream, salt, count, greedy):
    """Returns of `count` episodes in plain gymnasium envs, stepped in lockstep, on seeds from
    default_rng([seed, stream, salt]) in [2^31, 2^32). Sampled actions use a private generator
    drawn from the same rng (as ours does), so evaluating never touches training's RNG."""
    rng = np.random.default_rng([seed, stream, salt])
    seeds = rng.integers(2**31, 2**32, size=count)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    envs = [gym.make(env_id) for _ in range(count)]
    obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=False)])
    returns, active = np.zeros(count), np.ones(count, bool)
    while active.any():
        index = np.flatnonzero(active)
        with torch.no_grad():
            probs = policy.get_distribution(torch.as_tensor(obs[index])).distribution.probs
        actions = (
            probs.argmax(1) if greedy else torch.multinomial(probs, 1, generator=generator)[:, 0]
        )
        for i, action in zip(index, actions.tolist(), strict=False):
            obs[i], reward, terminated, truncated, _ = envs[i].step(action)
            returns[i] += reward
            active[i] = not (terminated or truncated)
    for env in envs:
        env.close()
    return returns


class Evaluator(BaseCallback):
    """Evaluates after each update: at the start of the next rollout and at the end of
    training (SB3 calls _on_rollout_end before the update, which would score the old policy)."""

    def __init__(self, args, threshold, write):
        super().__init__()
        self.args, self.threshold, self.write = args, threshold, write
        self.history, self.crossings, self.solved = [], [], None

    def _on_training_start(self):
        self.start, self.eval_time = time.perf_counter(), 0.0

    def _on_rollout_start(self):
        if self.model.num_timesteps > 0:
            self.evaluate()

    def _on_step(self):
        return self.solved is None or self.args.keep_going  # False stops learn()

    def _on_training_end(self):
        last = self.history[-1]["env_steps"] if self.history else None
        if (self.solved is None or self.args.keep_going) and last != self.model.num_timesteps:
            self.evaluate()

    def evaluate(self):
        entered = time.perf_counter()
        args, policy, stream = self.args, self.model.policy, len(self.history) + 1
        policy.set_training_mode(False)
        record = {
            "iteration": stream,
            "env_steps": int(self.model.num_timesteps),
            "wall_time": round(entered - self.start - self.eval_time, 4),
            "eval_return": float(
                episodes(policy, args.env, args.seed, stream, 1, EVAL_EPISODES, False).mean()
            ),
            "confirm_return": None,
        }
        if self.solved is None and record["eval_return"] >= self.threshold:
            record["confirm_return"] = float(
                episodes(policy, args.env, args.seed, stream, 2, CONFIRM_EPISODES, False).mean()
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
        self.eval_time += time.perf_counter() - entered


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-env-steps", type=int, help="budget (default: the zoo's n_timesteps)")
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="train to the budget after a confirmed solve, evaluating (does it stay solved?)",
    )
    args = parser.parse_args(argv)
    if args.env not in ZOO:
        print(
            f"peer_sb3.py: unsupported env '{args.env}'; the zoo hyperparameters here are for "
            f"{', '.join(ZOO)}",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(1)
    zoo = ZOO[args.env]
    budget = args.max_env_steps or zoo["n_timesteps"]
    threshold = gym.spec(args.env).reward_threshold
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    experiment = {
        "config": {
            "env": args.env,
            "algo": "sb3-ppo",
            "label": "SB3 PPO (RL-Zoo)",
            "seed": args.seed,
            "max_env_steps": budget,
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

    kwargs = {
        k: schedule(v) for k, v in zoo.items() if k not in ("n_envs", "n_timesteps", "policy")
    }
    env = make_vec_env(args.env, n_envs=zoo["n_envs"], seed=args.seed)  # DummyVecEnv, as the zoo
    model = PPO(zoo["policy"], env, seed=args.seed, device="cpu", verbose=0, **kwargs)
    evaluator = Evaluator(args, threshold, write)
    experiment["history"] = evaluator.history
    error = None
    try:
        model.learn(total_timesteps=budget, callback=evaluator)
    except KeyboardInterrupt:
        error = "interrupted"
    last, solved = (evaluator.history or [{}])[-1], evaluator.solved
    summary = {
        "iterations": len(evaluator.history),
        "env_steps": last.get("env_steps", 0),
        "wall_time": last.get("wall_time", 0.0),
        "solved_iteration": solved["iteration"] if solved else None,
        "solved_env_steps": solved["env_steps"] if solved else None,
        "solved_wall_time": solved["wall_time"] if solved else None,
        "crossings": evaluator.crossings,
        "reward_threshold": threshold,
        "error": error,
    }
    if error is None:
        model.policy.set_training_mode(False)
        summary["final_eval"] = {}
        for mode in ("sampled", "greedy"):
            returns = episodes(
                model.policy, args.env, args.seed, 0, 1, FINAL_EPISODES, mode == "greedy"
            )
            summary["final_eval"][mode] = {
                "mean": float(returns.mean()),
                "std": float(returns.std()),
                "entropy": None,
            }
    summary["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    experiment["summary"] = summary
    write()
    print(
        f"{args.env} seed {args.seed}: "
        + (
            f"solved at {solved['env_steps']:,} env steps, {solved['wall_time']:.1f} s"
            if solved
            else f"not solved in {summary['env_steps']:,} env steps"
        )
        + f" -> {out / 'experiment.json'}"
    )
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
