"""The options of a run: one Config field per flag (its default, its --help, its check, the
algorithms that use it), the per-env defaults chosen on tuning seeds, and the checks that refuse a
bad value or combination in one line.  policy_annealing.py reads them; the CLI is built from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import run_io
from run_io import UserError


def option(default: object, help: str, **argparse_kwargs: object) -> dataclasses.Field:
    """One option: its default, its --help, anything else argparse needs.  A bool is a switch:
    --name on, --no-name off.  `must` names its check (see MUST); `algos`
    the algorithms that use it (check_config refuses it, given, for the others)."""
    must = {int: "a positive integer", float: "a finite number >= 0"}.get(type(default))
    default = {"default_factory": dict} if isinstance(default, dict) else {"default": default}
    return dataclasses.field(**default, metadata={"help": help, "must": must, **argparse_kwargs})


def json_object(text: str) -> dict:
    """--env-kwargs: a JSON object, or argparse's one line that says JSON (not "invalid loads")."""
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({error}); pass an object, e.g. '{{\"tree_seed\": 1}}'"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text} is not a JSON object; pass one, e.g. '{{}}'")
    return value


def number_or_auto(text: str) -> float | str:
    """--target-entropy: nats a step, or auto (make_config turns it into the action space's)."""
    try:
        return text if text == "auto" else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor auto") from None


@dataclasses.dataclass
class Config:
    env: str = option("CartPole-v1", "gymnasium id: Box observations, Discrete or Box actions")
    algo: str = option("grouped", "the consistency enforced", choices=("grouped", "value", "err"))
    seed: int = option(0, "fixes env seeds, network init and action sampling", must=">= 0")
    iterations: int = option(200, "batches to sample and train on")
    num_groups: int = option(4, "seed groups per batch")
    group_size: int = option(4, "episodes per group, all reset with the group's seed")
    seed_groups: bool = option(True, "a group's episodes share its seed (--no-: the ablation)")
    optim_steps: int = option(50, "optimizer steps per batch (err: PPO epochs)")
    minibatches: int = option(4, "err: minibatches per epoch", algos=("err",))
    lr: float = option(3e-3, "Adam learning rate (V: see --value-lr)", must="a positive number")
    value_lr: float = option(
        0.0, "Adam learning rate of V, PCL's eta_v (0: --lr)", algos=("value", "err")
    )
    policy_steps: int = option(
        0, "value: pi joins V in the last N steps only (0: all)", must=">= 0", algos=("value",)
    )
    lr_decay: bool = option(False, "decay the learning rate linearly to 0 at the run's budget")
    temp_start: float = option(0.5, "temperature T at the first iteration")
    temp_end: float = option(0.5, "T at the run's budget (geometric schedule, see budget_progress)")
    # may be negative: a continuous policy's entropy is differential (SAC's usual target: -dim)
    target_entropy: float = option(0.0, "adapt T from --temp-start so that the policy's entropy "
                                   "is this many nats a step (0: the schedule; auto: the action "
                                   "space's, Discrete(n) 0.9 on one action and 0.1 spread over "
                                   "the rest as ALF, 0.325 for 2 and 0.435 for 4, a Box SAC's "
                                   "-dim(A) on actions scaled to [-1, 1])", must="a finite number",
                                   type=number_or_auto)  # fmt: skip
    temp_lr: float = option(0.05, "--target-entropy: step of the dual update on log T",
                            must="in (0, 1]")  # fmt: skip
    target_entropy_end: float = option(0.0, "--target-entropy: the target at the run's budget, "
                                       "linear from --target-entropy (0: held)",
                                       must="a finite number")  # fmt: skip
    # the bounds of an adapting T: the entropy lags T by many batches of an on-policy learner, so
    # an unbounded dual step overshoots (LunarLander grouped: T 0.1 -> 2e-4, docs/experiments.md)
    temp_min: float = option(
        1e-3,
        "--target-entropy: floor of T (at T -> 0 nothing resists "
        "a collapse to a deterministic policy)",
        must="a positive number",
    )
    temp_max: float = option(10.0, "--target-entropy: ceiling of T (above the return scale the "
                             "law is uniform)", must="a positive number")  # fmt: skip
    temp_max_step: float = option(0.1, "--target-entropy: largest change of log T a batch",
                                  must="a positive number")  # fmt: skip
    # 0.05 nats per step: neither collapse nor stall, see trust_region_targets
    trust_region: float = option(0.05, "grouped: nats per episode step a batch may move (0: off)",
                                 algos=("grouped",))  # fmt: skip
    ppo_clip: float = option(0.2, "err: PPO's ratio clip", must="a positive number", algos=("err",))
    target_kl: float = option(0.0, "err: end a batch's epochs once the approximate KL from the "
                              "behaviour policy passes 1.5x this, nats a step (SB3's; 0: off)",
                              must="a finite number >= 0", algos=("err",))  # fmt: skip
    gamma: float = option(0.99, "discount (value, err)", must="in (0, 1]", algos=("value", "err"))
    gae_lambda: float = option(0.95, "err: GAE lambda", must="in [0, 1]", algos=("err",))
    path_length: int = option(
        0, "value: steps per consistency path (0 = to the end)", must=">= 0", algos=("value",)
    )
    centre_residuals: bool = option(
        False, "value: pi follows residuals less their batch mean", algos=("value",)
    )
    baseline: str = option(
        "value", "err: GAE with V(s), or V' - mean", choices=("value", "group"), algos=("err",)
    )
    entropy_bonus: float = option(
        0.0,
        "err: weight of the usual H(pi) bonus (T = 0: PPO's; with T > 0 it moves the fixed "
        "point off the law, and pushes a squashed policy off its bounds)",
        algos=("err",),
    )
    max_grad_norm: float = option(0.0, "gradient-norm clip, 0 = none")
    hidden: int = option(64, "width of the two hidden layers")
    init_log_std: float = option(0.0, "Box actions: log sigma of the first policy, in (-5, 2) "
                                 "(PPO's log_std_init; 0: sigma 1, as at high T)",
                                 must="a finite number")  # fmt: skip
    obs_norm: bool = option(True, "normalise observations by running statistics (--no-: raw)")
    eval_every: int = option(5, "evaluate every N iterations")
    eval_episodes: int = option(32, "episodes per evaluation")
    confirm_episodes: int = option(100, "fresh episodes that must confirm a crossing to solve")
    final_eval_episodes: int = option(100, "episodes of the final evaluation")
    stop_when_solved: bool = option(False, "stop at the first confirmed solve")
    max_env_steps: int = option(0, "also stop after this many env steps (0: no limit)", must=">= 0")
    max_minutes: float = option(0.0, "also stop after this much training time (0: no limit)")
    threads: int = option(1, "torch threads; a seed reproduces a run only with the same count")
    env_kwargs: dict = option({}, "JSON for gym.make, e.g. '{\"tree_seed\": 1}'", type=json_object)
    label: str = option("", "name of this run in plots and reports")
    out: str = option("", "run directory (default runs/<env>-<algo>-s<seed>-<timestamp>/)")
    overwrite: bool = option(False, "reuse an --out that already holds a run")
    resume: str = option("", "continue the run in this directory from its last checkpoint")
    load_model: str | None = option(
        None, "start from (with --validate, evaluate) this checkpoint.pt, or a run directory's"
    )
    validate: bool = option(False, "only evaluate --load-model, greedily")
    render: str = option("", "show or record evaluations' 1st episode", choices=("human", "video"))
    quiet: bool = option(False, "no progress bar and no summary line")
    tensorboard: bool = option(
        False,
        "also write the history as TensorBoard scalars into the run directory, at its env "
        "steps (tensorboard --logdir runs)",
    )

    # ---- the schedules over the run's budget: as an iteration starts, progress in [0, 1]
    def learning_rates(self, progress: float) -> list[float]:
        """--lr and --value-lr; --lr-decay: linear to 0 at the budget (Adam's steps stay ~lr
        near the optimum otherwise)."""
        scale = 1 - progress if self.lr_decay else 1
        return [self.lr * scale, (self.value_lr or self.lr) * scale]

    def budget_progress(self, state: dict) -> float:
        """The share of the schedule_clock's budget spent as an iteration starts, in [0, 1].  Env
        steps and iterations keep a seed's run reproducible; minutes do not (T follows the clock).
        Another budget that ends the run first (say 30 minutes before 10M steps) cuts it short."""
        name, budget = schedule_clock(self)  # state: the run's iteration, env_steps and wall_time
        if name == "max_env_steps":
            return min(state["env_steps"] / budget, 1.0)
        if name == "max_minutes":
            return min(state["wall_time"] / (60 * budget), 1.0)
        return state["iteration"] / budget

    def temperature_at(self, progress: float) -> float:
        """Geometric schedule temp_start -> temp_end (constant when they are equal).  Geometric:
        the law's sharpness goes with 1/T, so each factor of T (0.5 -> 0.05 is one factor of 10)
        gets an equal share of the budget; a linear one would spend 90 % above the last decade."""
        if self.temp_start == self.temp_end:
            return self.temp_start
        return self.temp_start * (self.temp_end / self.temp_start) ** progress

    def schedules_move(self) -> bool:
        """Whether anything follows the budget's clock, so that a new budget would bend it: T's
        schedule (with --target-entropy T adapts instead, and the target may move), the decay."""
        if self.target_entropy:
            return self.target_entropy_end not in (0, self.target_entropy) or self.lr_decay
        return self.temp_start != self.temp_end or self.lr_decay

    def target_entropy_at(self, progress: float) -> float:
        """--target-entropy, held or linear to --target-entropy-end over the budget (nats a
        step)."""
        end = self.target_entropy_end or self.target_entropy
        return self.target_entropy + (end - self.target_entropy) * progress


# Overrides of Config's defaults per env and algo, chosen on tuning seeds (docs/experiments.md).
# fmt: off
MUJOCO = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")  # tuned on Hopper (docs/experiments.md)
MUJOCO_ERR = {  # each env's own err settings on top of the MuJoCo err shape (below, with reasons)
    "HalfCheetah-v5": dict(init_log_std=-0.7, gamma=0.98, gae_lambda=0.92, hidden=256,
                           num_groups=4),
    "Hopper-v5": dict(init_log_std=-0.5),
    "Walker2d-v5": dict(init_log_std=-0.5),
}
DEFAULTS = {
    "*/value": dict(num_groups=8, group_size=1),
    "*/err": dict(num_groups=8, group_size=1, optim_steps=10, lr=1e-3, temp_start=0.05,
                  temp_end=0.05, max_grad_norm=0.5),
    "CartPole-v1": dict(iterations=100, eval_every=1),
    # CartPole grouped: a few plain Adam steps a batch. Fitting each batch to convergence moved the
    # policy as far on noise as on failures, so it never stayed solved (docs/experiments.md).
    "CartPole-v1/grouped": dict(num_groups=2, group_size=4, temp_start=0.2, temp_end=0.2,
                                optim_steps=5, lr=1e-3, trust_region=0.0),
    # CartPole value: V fits a batch alone first, then the policy takes 5 small steps. Fitting the
    # batch's residual through the policy over 50 steps made it fall after solves. T 0.2: more
    # evaluations at 475 or more than T 0.5 (docs/experiments.md).
    "CartPole-v1/value": dict(policy_steps=5, lr=5e-4, value_lr=3e-3, temp_start=0.2,
                              temp_end=0.2),
    # CartPole err: T cooled 0.05 -> 0.0005 over the 100 iterations. Held at 0.05, -T log pi
    # widens a solved policy until it fails (all returns equal at 500): it stayed solved on 4 of
    # tuning seeds 10-29, cooled on 12 of the 20, solving about as soon there (report seeds: 7 of
    # 15 stay solved, the median solve slower: 30k env steps against 23k; docs/experiments.md)
    "CartPole-v1/err": dict(num_groups=4, lr=2e-3, temp_end=0.0005),
    # LunarLander: the plain command runs until a confirmed landing or 30 minutes of training.
    "LunarLander-v3": dict(iterations=1_000_000, stop_when_solved=True, max_minutes=30.0,
                           temp_start=0.1, temp_end=0.1, lr=5e-4),
    # LunarLander grouped: CartPole's 5 plain Adam steps a batch, T 0.1 held. It confirmed a landing
    # on tuning seeds 10 and 11 by 7M env steps (the 0.05-nat trust region: on neither in 20
    # minutes); cooling T 1 -> 0.03 over 5M steps landed neither (docs/experiments.md).
    "LunarLander-v3/grouped": dict(optim_steps=5, lr=1e-3, trust_region=0.0),
    # LunarLander value: pi 10x slower than V, or V's early error makes pi deterministic
    # (docs/experiments.md, "Why value collapses on LunarLander").
    "LunarLander-v3/value": dict(lr=1e-4, value_lr=1e-3),
    # LunarLander err: many minibatch steps per sample (10 epochs x 32), long horizon (gamma
    # 0.999, GAE 0.98 as in the RL-Zoo's PPO), a small temperature.
    "LunarLander-v3/err": dict(iterations=1000, num_groups=8, optim_steps=10, minibatches=32,
                               gamma=0.999, gae_lambda=0.98, temp_start=0.01, temp_end=0.01),
    # Continuous actions (a Gaussian policy): the plain command runs until a confirmed solve or a
    # budget.  Pendulum-v1's threshold, -200, is run_io.THRESHOLDS'.
    "Pendulum-v1": dict(iterations=1_000_000, stop_when_solved=True, max_env_steps=100_000),
    # Pendulum err, chosen by an Optuna study (bench/tune.py, 10 trials on tuning seeds 0-5): 4
    # episodes a batch, 20 epochs of 32-step minibatches at lr 3e-4 decayed over the 100k steps,
    # gamma 0.95, GAE 0.9, T 0.08, 128 units.  The trial (unrounded) solved 6 of 6 on seeds 0-5
    # (mean 62k env steps), these rounded values 6 of 6 on held-out tuning seeds 6-11 (median
    # 44k); the earlier default (the RL-Zoo PPO's gamma 0.9, 10 epochs of ~64, lr 1e-3, T 0.01)
    # solved 3 of 6 and 2 of 6 there (docs/experiments.md).
    "Pendulum-v1/err": dict(num_groups=4, optim_steps=20, minibatches=25, gamma=0.95,
                            gae_lambda=0.9, lr=3e-4, lr_decay=True, temp_start=0.08,
                            temp_end=0.08, hidden=128),
    "MountainCarContinuous-v0": dict(iterations=1_000_000, stop_when_solved=True, max_minutes=30.0),
    "LunarLanderContinuous-v3": dict(iterations=1_000_000, stop_when_solved=True, max_minutes=30.0,
                                     temp_start=0.01, temp_end=0.01, lr=5e-4),
    # LunarLanderContinuous err: LunarLander-v3's err settings, T 0.01, and an entropy bonus of
    # 0.03. Without it the policy saturated the squash on tuning seeds 12 and 14 (4 of 10-15
    # landed in 1M env steps): against |u| >> 1 -T log pi pushes only through the advantages'
    # noise, the bonus's gradient (reparameterised) directly. With it 6 of 6 landed, 153k-431k (a
    # larger T, the automatic T: no better; docs/experiments.md)
    "LunarLanderContinuous-v3/err": dict(num_groups=8, optim_steps=10, minibatches=32,
                                         gamma=0.999, gae_lambda=0.98, lr=1e-3, entropy_bonus=0.03),
    # grouped and value: LunarLander-v3's, T 0.1 (untuned here: a tanh-Gaussian's entropy on
    # [-1, 1]^2 is at most 1.39 nats a step, LunarLander's four actions' too)
    "LunarLanderContinuous-v3/grouped": dict(optim_steps=5, lr=1e-3, trust_region=0.0,
                                             temp_start=0.1, temp_end=0.1),
    "LunarLanderContinuous-v3/value": dict(lr=1e-4, value_lr=1e-3, temp_start=0.1, temp_end=0.1),
    # QuadraticBandit-v0 (one step, the exact check): one group of 64 samples a batch, gamma = 1.
    "QuadraticBandit-v0": dict(obs_norm=False, iterations=60, eval_every=10, temp_start=0.5,
                               temp_end=0.5, gamma=1.0, num_groups=1, group_size=64, lr=1e-2,
                               optim_steps=20, trust_region=0.0),
    "QuadraticBandit-v0/value": dict(num_groups=64, group_size=1, iterations=30),
    # err: the group baseline, lr decayed to 0 (PPO's steps do not vanish near the law by itself)
    "QuadraticBandit-v0/err": dict(baseline="group", optim_steps=10, minibatches=1, lr_decay=True,
                                   iterations=80, max_grad_norm=0.0),
    # Tree-v0: gamma = 1, so the soft-optimal policy is exactly the Boltzmann law over returns.
    "Tree-v0": dict(obs_norm=False, eval_every=10, iterations=40, lr_decay=True, lr=5e-3,
                    temp_start=1.0, temp_end=1.0, gamma=1.0, trust_region=0.0, num_groups=1,
                    group_size=64),
    # GridWorld-v0: Tree-v0's settings (the observation is a one-hot: no normaliser), T 2
    "GridWorld-v0": dict(obs_norm=False, eval_every=10, iterations=100, lr_decay=True, lr=5e-3,
                         temp_start=2.0, temp_end=2.0, gamma=1.0, trust_region=0.0, num_groups=1,
                         group_size=64),
    "GridWorld-v0/value": dict(num_groups=64, group_size=1),  # 16: 0.023 on the seed grid at T 2
    "GridWorld-v0/err": dict(baseline="group", group_size=32, optim_steps=4, minibatches=1,
                             lr=3e-3, iterations=300),  # 100: 0.017, 200: 0.0094 there
    "Tree-v0/value": dict(num_groups=16, group_size=1, iterations=80),
    "Tree-v0/err": dict(baseline="group", group_size=32, optim_steps=4, minibatches=1, lr=3e-3,
                        iterations=80),
    # MuJoCo (gymnasium[mujoco]): 1M env steps, 3 to 10 minutes of training here, evaluating every
    # 25 batches on 10 episodes (an episode is up to 1,000 steps: 32 every 5 tripled the time).
    **{env_id: dict(iterations=1_000_000, max_env_steps=1_000_000, eval_every=25, eval_episodes=10)
       for env_id in MUJOCO},
    # err: PPO's MuJoCo shape (gamma 0.99, GAE 0.95, lr 3e-4, 10 epochs; 32 minibatches of a batch
    # of 8 episodes), T 0.01: Hopper tuning seed 0 ended at 2,524 sampled (T 0.001: 1,459)
    # HalfCheetah: a first sigma of 0.5, not 1 ("What matters in on-policy RL": start below 1):
    # tuning seeds 0-3 ended at 3,224-3,512 sampled against 1,331-2,804 (sigma 0.135, the
    # RL-Zoo's: 1,387-1,821; no gradient clip, or a decayed lr: no better)
    # and the RL-Zoo's gamma 0.98 and GAE 0.92 (its HalfCheetah entry): tuning seeds 0-3 ended at
    # 3,725-3,961 against 3,224-3,512 at 0.99 and 0.95 (Hopper: cooling T or a decayed lr, worse);
    # and two hidden layers of 256 (the peer's width): 4,045-4,681 against 3,725-3,961 (Hopper's
    # 128: worse on tuning seeds 0 and 1); then batches of 4 episodes, twice the updates a sample:
    # 5,290-5,969 against 4,045-4,681 (Hopper's 4 at 64 units: worse on seeds 0 and 1)
    # Hopper: a first sigma of 0.61 (log -0.5); tuning seeds 0-5 ended at 2,090-3,117 sampled
    # (median 2,779) against sigma 1's 1,224-2,962 (2,394), better on five of six (sigma 0.5:
    # worse on seeds 0 and 1). Walker2d too: tuning seeds 0-5 ended at 1,412-4,086 (median 2,797)
    # against sigma 1's 1,320-3,391 (2,327): a higher median, though better on three seeds of six
    **{f"{env_id}/err": dict(minibatches=32, lr=3e-4, temp_start=0.01, temp_end=0.01,
                             **MUJOCO_ERR.get(env_id, {}))
       for env_id in MUJOCO},
    # Hopper grouped: T 0.01, as err's. Tuning seeds 0-5 ended at 631-1,132 sampled (median 947)
    # against the generic T 0.5's 110-233 (202): better on all six; nothing else tuned.
    "Hopper-v5/grouped": dict(temp_start=0.01, temp_end=0.01),
}
MUST = {  # the checks an option's `must` may name
    "a positive integer": lambda value: value >= 1, ">= 0": lambda value: value >= 0,
    "a positive number": lambda value: value > 0 and math.isfinite(value),
    "a finite number >= 0": lambda value: value >= 0 and math.isfinite(value),
    "a finite number": math.isfinite,
    "in (0, 1]": lambda value: 0 < value <= 1, "in [0, 1]": lambda value: 0 <= value <= 1,
}
# fmt: on


SHOWN = ("env", "algo", "baseline", "target_entropy")  # not numbers; --help shows their default
# the options of the automatic temperature, refused without --target-entropy
CONTROL = ("temp_lr", "target_entropy_end", "temp_min", "temp_max", "temp_max_step")


def defaults_for(env_id: str, algo: str) -> dict:
    """Config for this env and algo: its defaults with their overrides on top."""
    merged = dataclasses.asdict(Config(env=env_id, algo=algo))
    for key in (f"*/{algo}", env_id, f"{env_id}/{algo}"):
        merged.update(DEFAULTS.get(key, {}))
    return merged


def kind_of(field: dataclasses.Field) -> tuple[tuple[type, ...], str]:
    """The types a field's value may have, by its default's (a Config built in Python is not
    parsed: "20" for an int, or 1 for a switch, must be refused too), and how to say them."""
    default = field.default_factory() if field.default is dataclasses.MISSING else field.default
    return {
        bool: ((bool,), "True or False"),
        int: ((int,), "an integer"),
        float: ((int, float), "a number"),
        dict: ((dict,), "a dict of keyword arguments"),
        type(None): ((str, type(None)), "a string (a path) or None"),
    }.get(type(default), ((str,), "a string"))


def check_config(cfg: Config, given: tuple | dict = ()) -> None:
    """Every bad value or combination is one UserError that names the fix.  `given`: the options
    the user set, refused when they belong to another algorithm (they would be ignored)."""
    for field in dataclasses.fields(cfg):
        must, value = field.metadata["must"], getattr(cfg, field.name)
        flag, (types, kind) = f"--{field.name.replace('_', '-')}", kind_of(field)
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise UserError(f"{flag} must be {kind}, got {value!r}")
        choices = field.metadata.get("choices", ())
        if choices and value not in (*choices, field.default):  # render's default "" is none
            raise UserError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
        if must and not MUST[must](value):
            raise UserError(f"{flag} must be {must}, got {value}")
        algos = field.metadata.get("algos", (cfg.algo,))
        if field.name in given and cfg.algo not in algos:
            raise UserError(
                f"{flag} is an option of --algo {' and '.join(algos)}; "
                f"drop it for --algo {cfg.algo}"
            )
    if (cfg.temp_start == 0) != (cfg.temp_end == 0):
        raise UserError("--temp-start, --temp-end: 0 and 0, or both > 0 (cannot reach or leave 0)")
    if cfg.algo != "err" and cfg.temp_start == 0:
        raise UserError(f"--algo {cfg.algo} needs a temperature > 0; use --algo err for T = 0")
    if (cfg.algo == "grouped" or cfg.baseline == "group") and cfg.group_size < 2:
        raise UserError(f"--group-size must be >= 2 to compare episodes, got {cfg.group_size}")
    if cfg.confirm_episodes < cfg.eval_episodes:
        raise UserError("--confirm-episodes must be >= --eval-episodes to confirm an evaluation")
    if cfg.target_entropy and ("temp_end" in given or cfg.temp_start == 0):
        raise UserError("--target-entropy adapts T from a --temp-start > 0; drop --temp-end")
    for name in CONTROL:
        if name in given and not cfg.target_entropy:
            flag = f"--{name.replace('_', '-')}"
            raise UserError(f"{flag} steers T toward --target-entropy; give one, or drop {flag}")
    if "target_entropy_end" in given and cfg.target_entropy_end == 0:
        raise UserError("--target-entropy-end 0 would mean a held target; pass e.g. 0.001")
    if cfg.target_entropy and not cfg.temp_min <= cfg.temp_start <= cfg.temp_max:
        raise UserError("--target-entropy: --temp-start must lie in [--temp-min, --temp-max]")
    if not -5 < cfg.init_log_std < 2:  # bounded_log_std's range
        raise UserError(f"--init-log-std must lie in (-5, 2), got {cfg.init_log_std}")
    if "init_log_std" in given and cfg.load_model:  # an env's default sigma is no request
        raise UserError("--init-log-std starts a new policy; --load-model brings its own sigma")
    if cfg.tensorboard:
        run_io.check_tensorboard()
    if cfg.validate and not cfg.load_model:
        raise UserError("--validate evaluates a saved policy: add --load-model PATH")


def make_config(env: str = Config.env, algo: str = Config.algo, **overrides: object) -> Config:
    """The checked Config of this env and algo: its per-env defaults, then `overrides`."""
    names = {field.name for field in dataclasses.fields(Config)}
    if unknown := sorted(set(overrides) - names):
        raise UserError(f"unknown option {unknown[0]}; see python policy_annealing.py --help")
    if overrides.get("resume"):  # its config is the saved one: see config_from_args
        raise UserError("resume a run from the command line: --resume DIR")
    if isinstance(overrides.get("load_model"), str):  # a run directory: its checkpoint.pt
        overrides["load_model"] = str(run_io.checkpoint_file(overrides["load_model"]))
    values = {**defaults_for(env, algo), **overrides, "env": env, "algo": algo}
    if values["target_entropy"] == "auto":  # the action space's, made into a number here
        check_config(Config(**{**values, "target_entropy": 0.0}), overrides)  # before the env
        values["target_entropy"] = run_io.default_target_entropy(Config(**values))
    cfg = Config(**values)
    check_config(cfg, overrides)
    return cfg


def config_of(saved: dict) -> Config:
    """A saved config (experiment.json, checkpoint) as a Config of this version."""
    saved = dict(saved)
    if "clip_eps" in saved:  # saved before the trust region and the PPO clip had a flag each
        saved["ppo_clip" if saved["algo"] == "err" else "trust_region"] = saved.pop("clip_eps")
    return Config(**{field.name: saved[field.name] for field in dataclasses.fields(Config)
                     if field.name in saved})  # fmt: skip


def schedule_clock(cfg: Config) -> tuple[str, float]:
    """The budget the schedules run over: --max-env-steps, else --max-minutes, else --iterations."""
    budgets = [(name, getattr(cfg, name)) for name in ("max_env_steps", "max_minutes")]
    return next(((name, value) for name, value in budgets if value), ("iterations", cfg.iterations))


# ---- the command line ---------------------------------------------------------------------------
DESCRIPTION = "Policy Annealing: a thermodynamics-inspired family of RL algorithms"


def refuse(message: str) -> None:  # argparse's errors: one line, no usage dump
    raise UserError(f"{message} (see --help)")


def build_parser(env: str = Config.env, algo: str = Config.algo) -> argparse.ArgumentParser:
    """argparse from Config, its help showing the defaults of this env and algo.  Every flag
    defaults to None, so that config_from_args knows what was given."""
    defaults = defaults_for(env, algo)
    epilog = f"Defaults shown for --env {env} --algo {algo}; give yours before --help for theirs."
    # no abbreviations: --iter 2 would be --iterations 2, and a new flag could change what an
    # old command line means
    parser = argparse.ArgumentParser(description=DESCRIPTION, epilog=epilog, allow_abbrev=False)
    parser.error = refuse
    for field in dataclasses.fields(Config):
        flag, extra = "--" + field.name.replace("_", "-"), dict(field.metadata)
        extra.pop("must"), extra.pop("algos", None)
        if isinstance(field.default, bool):  # --name and --no-name
            extra.update(action=argparse.BooleanOptionalAction)
            extra["help"] += f" (default {'on' if defaults[field.name] else 'off'})"
        else:
            extra.setdefault("type", {int: int, float: float}.get(type(field.default), str))
            shown = extra["type"] in (int, float) or field.name in SHOWN
            extra["help"] += f" (default {defaults[field.name]})" if shown else ""
        parser.add_argument(flag, dest=field.name, default=None, **extra)
    return parser


def parse_command_line(argv: list[str]) -> Config:
    """The checked Config of a command line.  --env and --algo are read first: the parser's
    --help shows their defaults."""
    pair = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # as build_parser
    pair.error = refuse
    pair.add_argument("--env", default=Config.env)
    pair.add_argument("--algo", default=Config.algo)
    parser = build_parser(**vars(pair.parse_known_args(argv)[0]))
    return config_from_args(parser.parse_args(argv))


def refuse_a_finished_run(cfg: Config) -> None:
    """--resume of a run that ended by itself (no signal, no error), with no budget on this
    command line that would let it go on: one line saying what would, and nothing written (its
    final evaluation would only be taken again, its summary rewritten)."""
    summary = run_io.read_experiment(cfg.resume, "--resume").get("summary") or {}
    if not summary or summary.get("error"):  # killed, interrupted or failed: it has more to do
        return
    done, steps, seconds = summary["iterations"], summary["env_steps"], summary["wall_time"]
    ends = [("iterations", done)] if done >= cfg.iterations else []
    ends += [("max_env_steps", steps)] if 0 < cfg.max_env_steps <= steps else []
    minutes = math.ceil(seconds / 60 * 100) / 100
    ends += [("max_minutes", minutes)] if 0 < 60 * cfg.max_minutes <= seconds else []
    solved = cfg.stop_when_solved and summary.get("solved_iteration") is not None
    if not ends and not solved:
        return
    finished = (
        f"--resume {cfg.resume}: the run is finished (stopped by {summary['stopped_by']} after "
        f"{done} iterations, {steps} env steps)"
    )
    bent = [name for name, _ in ends if name == schedule_clock(cfg)[0]]
    if solved or (bent and cfg.schedules_move()):
        why = "it stops when solved" if solved else "its schedules end there"
        raise UserError(
            f"{finished} and {why}; to train on, start a new run from it with --load-model "
            f"{cfg.resume} (nothing was changed)"
        )
    more = " and ".join(f"--{name.replace('_', '-')} above {value:g}" for name, value in ends)
    raise UserError(f"{finished}; to extend it, pass {more} (nothing was changed)")


def config_from_args(args: argparse.Namespace) -> Config:
    given = {name: value for name, value in vars(args).items() if value is not None}
    if given.get("resume"):  # the run's own config; only how long and how shown may change
        saved = config_of(run_io.saved_config(given))
        cfg = dataclasses.replace(saved, **given)
        if schedule_clock(cfg) != schedule_clock(saved) and cfg.schedules_move():
            flag, value = schedule_clock(saved)
            raise UserError(
                f"--resume {cfg.resume}: its schedules run over --{flag.replace('_', '-')} "
                f"{value}, and a new budget would bend them; resume without it, or start a new run"
            )
        check_config(cfg)
        refuse_a_finished_run(cfg)
        return cfg
    if given.get("validate") and given.get("load_model"):  # the env the policy was trained on
        checkpoint = run_io.load_checkpoint(given["load_model"])
        saved = config_of(checkpoint["config"])
        for name in ("env", "env_kwargs", "hidden", "obs_norm"):
            given.setdefault(name, getattr(saved, name))
        # the law at the T its last iteration trained at (the checkpoint's), as the summary's KL
        final = checkpoint["state"].get("last_temperature", saved.temp_end)
        given.setdefault("temp_start", final), given.setdefault("temp_end", final)
    return make_config(**given)
