r"""Watch one update step by step.  Trains a run with any policy_annealing flags up to update --at
N, then replays that update on a copy of the agent and its optimizer, --every K optimizer steps at
a time (for err, K epochs of --minibatches steps).  After each chunk: the copy's mean return on
32 sampled episodes (the same seeds every time), KL(pi_before || pi_now) over the batch's states,
where in the episodes the taken actions' log-probabilities moved and, for `value`, where V was
above or below its target.

    # a CartPole value drop under the previous default (50 joint steps, lr 3e-3 for both, T 0.5):
    python bench/replay_update.py --at 55 --algo value --seed 15 --policy-steps 0 --lr 3e-3 \
        --temp-start 0.5 --temp-end 0.5

The run is the one policy_annealing.py would make (schedules included) up to update N, and stops
there.  The replay is exact for `value`, for `grouped` without the trust region and for `err
--baseline group`.  `err` with V recomputes its advantages from the moved V in each chunk, an
approximation.  `grouped --trust-region` is not the run's update at all: each chunk recomputes
the targets with a fresh budget of --trust-region nats a step, so the replay may move up to
(steps / K) times as far as the update did.
"""

import argparse
import copy
import dataclasses
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from update_kl import state_kl  # noqa: E402  (bench/, this script's folder)

import annealing_config  # noqa: E402
import policy_annealing as pa  # noqa: E402
import run_io  # noqa: E402

WINDOWS = (0, 100, 200, 300, 400, 500, 1000)  # episode steps, for where log p moved (not > 1000)


def value_residuals(agent, batch, temperature, cfg):
    """V(s_t) - target of value_loss at every real step, 0 elsewhere, (G, K, steps): for
    whole-episode paths (d = 0) V(s_t) enters only its own residual, so d loss / d V(s_t) =
    2 residual_t / n."""
    values = agent.values(batch.observations).detach().requires_grad_()
    log_probs = pa.taken_log_probs(agent, batch).detach()
    loss = pa.value_loss(batch.rewards, log_probs, values, batch.mask, batch.terminated,
                         temperature, cfg.gamma)  # fmt: skip
    (grad,) = torch.autograd.grad(loss, values)
    return torch.where(batch.mask, grad[..., :-1] * batch.mask.sum() / 2, 0)


def by_window(name, per_step, mask):
    """Mean of per_step (G, K, steps) over the real steps of each window of WINDOWS."""
    print(f"   {name}:", end="")
    for start, end in zip(WINDOWS, WINDOWS[1:], strict=False):
        if mask[..., start:end].any():
            print(f"  {start}-{end} {per_step[..., start:end][mask[..., start:end]].mean():+.3f}",
                  end="")  # fmt: skip
    print()


def report(agent, before, batch, temperature, cfg, envs, steps):
    """Evaluation and KL; by window of steps, the change of the taken actions' log p and, for
    value with d = 0, the residual V - target."""
    with torch.no_grad():
        after = agent.head.log_probs(agent.policy_outputs(batch.observations[..., :-1, :]))
        taken = after.gather(-1, batch.actions[..., None]).squeeze(-1) - batch.log_probs
    kl = state_kl(before, after)[batch.mask]
    returns, _ = pa.evaluate(agent, envs, cfg, stream=10**6)
    unit = "epochs" if cfg.algo == "err" else "steps"
    print(f"after {steps:3d} {unit}: eval {returns.mean():6.1f}, KL mean {kl.mean():.4f} max "
          f"{kl.max():.3f}")  # fmt: skip
    by_window("change of log p(taken)", taken, batch.mask)
    if cfg.algo == "value" and cfg.path_length == 0:
        by_window("V - target", value_residuals(agent, batch, temperature, cfg), batch.mask)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--at", type=int, required=True, help="the update to replay (1-based)")
    parser.add_argument(
        "--every", type=int, default=10, help="optimizer steps (err: epochs) per chunk"
    )
    ours, theirs = parser.parse_known_args(argv)
    calls = 0

    class Replayed(Exception):  # stops the run right after the replay
        pass

    def watch(update):
        def wrapped(agent, optimizer, batch, temperature, cfg, rng):
            nonlocal calls
            calls += 1
            if calls == ours.at:
                replay(update, agent, optimizer, batch, temperature, cfg, rng)
                raise Replayed
            return update(agent, optimizer, batch, temperature, cfg, rng)

        return wrapped

    def replay(update, agent, optimizer, batch, temperature, cfg, run_rng):
        agent, optimizer = copy.deepcopy((agent, optimizer))  # one memo: the optimizer follows
        envs, states = run_io.make_envs(cfg, 32), batch.observations[..., :-1, :]
        with torch.no_grad():
            before = agent.head.log_probs(agent.policy_outputs(states))
        print(f"update {ours.at}: batch returns {batch.returns.flatten().tolist()}")
        report(agent, before, batch, temperature, cfg, envs, 0)
        rng = torch.Generator()
        rng.set_state(run_rng.get_state())  # err: the minibatch orders the update would draw
        # value --policy-steps K: the first steps move V alone. A chunk cannot say so through
        # cfg, so those steps run with the policy's parameters out of autograd (the same as the
        # update's detach: no gradient, Adam skips them), split at the boundary.
        v_alone = cfg.optim_steps - cfg.policy_steps if cfg.policy_steps else 0
        for done in range(0, cfg.optim_steps, ours.every):
            end = min(done + ours.every, cfg.optim_steps)
            split = min(max(v_alone, done), end)  # steps before it move V alone
            for start, stop in ((done, split), (split, end)):
                if stop > start:
                    agent.policy.requires_grad_(start >= v_alone)
                    chunk = dataclasses.replace(cfg, optim_steps=stop - start, policy_steps=0)
                    update(agent, optimizer, batch, temperature, chunk, rng)
            agent.policy.requires_grad_(True)
            report(agent, before, batch, temperature, cfg, envs, end)

    for algo, update in list(pa.UPDATES.items()):
        pa.UPDATES[algo] = watch(update)
    with tempfile.TemporaryDirectory() as out:
        args = annealing_config.build_parser().parse_args([*theirs, "--quiet", "--out", out])
        try:
            pa.train(annealing_config.config_from_args(args), Path(out))
        except Replayed:
            return
    print(f"the run ended before update {ours.at}; nothing replayed")


if __name__ == "__main__":
    main(sys.argv[1:])
