"""Where the time goes in one default run (make profile): cProfile phases, the env-stepping floor,
and two levers (torch threads, gymnasium vector envs).

    python bench/profile_run.py CartPole-v1 grouped 4
"""

import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import annealing_config  # noqa: E402
import policy_annealing as pa  # noqa: E402


def cumulative(stats, function, caller=None):
    """Seconds spent in `function` (and below), only in calls from `caller` if given."""
    total = 0.0
    for (_, _, name), (_, _, _, cum, callers) in stats.stats.items():
        if name != function:
            continue
        if caller is None:
            total += cum
        else:
            total += sum(c[3] for (_, _, n), c in callers.items() if n == caller)
    return total


def random_steps(env_id, count, seed=0):
    env, rng = gym.make(env_id), np.random.default_rng(seed)
    env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(count):
        _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            env.reset()
    return time.perf_counter() - start


def main(env_id, algo, seed):
    values = annealing_config.defaults_for(env_id, algo)
    values.update(env=env_id, algo=algo, seed=seed, stop_when_solved=True, quiet=True)
    cfg = pa.Config(**values)
    pa.check_config(cfg)
    profiler = cProfile.Profile()
    profiler.enable()
    summary = pa.train(cfg, Path(tempfile.mkdtemp()))[1]["summary"]
    profiler.disable()
    stats = pstats.Stats(profiler)
    steps = summary["env_steps"]
    print(
        f"{env_id} {algo} seed {seed}: {steps} env steps, solved at "
        f"{summary['solved_env_steps']}, training time {summary['wall_time']:.2f} s, "
        f"peak RSS {summary['peak_rss_mb']} MB (all times under cProfile, which inflates "
        "Python-call-heavy parts)"
    )
    rows = [
        ("optimizer passes (update)", cumulative(stats, f"update_{algo}")),
        ("sampling for training", cumulative(stats, "sample_episodes", caller="train")),
        ("env.step, all sampling", cumulative(stats, "step", caller="sample_episodes")),
        ("policy forward, all sampling", cumulative(stats, "log_probs", caller="sample_episodes")),
        ("evaluation (not training time)", cumulative(stats, "evaluate")),
        (
            "checkpoint + experiment.json",
            cumulative(stats, "save_checkpoint") + cumulative(stats, "write_json"),
        ),
    ]
    for label, seconds in rows:
        print(f"  {label:34s} {seconds:7.2f} s")
    floor_profiler = cProfile.Profile()  # the floor under the same profiler, to compare with
    floor_profiler.enable()
    floor = random_steps(env_id, steps)
    floor_profiler.disable()
    print(
        f"  {'floor: as many random-action steps':34s} {floor:7.2f} s "
        f"({random_steps(env_id, steps):.2f} s without the profiler)"
    )

    # Lever: torch threads, on the same sampling work.
    envs = [gym.make(env_id) for _ in range(8)]
    agent = pa.make_agent(cfg, envs[0], with_value=False)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        start, count = time.perf_counter(), 0
        for k in range(10):
            batch = pa.sample_episodes(
                envs, agent, [k, k + 100], 4, torch.Generator().manual_seed(k)
            )
            count += int(batch.mask.sum())
        print(
            f"  sampler, {threads} torch thread(s): "
            f"{(time.perf_counter() - start) / count * 1e6:.1f} µs/step"
        )
    # The same lever on the update: one update of a fresh agent on one fixed batch.
    batch = pa.sample_episodes(envs, agent, [0, 1], 4, torch.Generator().manual_seed(0))
    for threads in (1, 2):
        torch.set_num_threads(threads)
        fresh = pa.make_agent(cfg, envs[0], with_value=cfg.algo != "grouped")
        optimizer = torch.optim.Adam(fresh.parameters(), lr=cfg.lr)
        start = time.perf_counter()
        pa.UPDATES[cfg.algo](
            fresh, optimizer, batch, cfg.temp_start, cfg, torch.Generator().manual_seed(0)
        )
        print(
            f"  one update on a fixed batch of {int(batch.mask.sum())} steps, {threads} torch "
            f"thread(s): {time.perf_counter() - start:.2f} s"
        )
    torch.set_num_threads(1)
    # Lever: gymnasium vector envs against stepping 8 envs in a loop, random actions.
    rng, count = np.random.default_rng(0), 3000
    for env in envs:
        env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(count):
        for env in envs:
            _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            if terminated or truncated:
                env.reset()
    print(
        f"  8 envs stepped in a loop: {(time.perf_counter() - start) / count / 8 * 1e6:.1f} µs/step"
    )
    for mode in ("sync", "async"):
        vector = gym.make_vec(env_id, num_envs=8, vectorization_mode=mode)
        vector.reset(seed=0)
        start = time.perf_counter()
        for _ in range(count):
            vector.step(rng.integers(vector.single_action_space.n, size=8))
        print(
            f"  8 envs, {mode} vector env: {(time.perf_counter() - start) / count / 8 * 1e6:.1f}"
            " µs/step"
        )
        vector.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
