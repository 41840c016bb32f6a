"""What the test files share: a checked Config with fast evaluation settings, the smallest
training run, --validate as the command line runs it, and an interrupt in a chosen update."""

import annealing_config
import policy_annealing as pa
import run_io


def parsed_config(argv):
    """The Config the command line makes of argv."""
    return annealing_config.config_from_args(annealing_config.build_parser().parse_args(argv))


def config(env="CartPole-v1", algo="grouped", **overrides):
    values = annealing_config.defaults_for(env, algo)
    values.update(env=env, algo=algo, eval_episodes=2, final_eval_episodes=2, quiet=True)
    values.update(overrides)
    cfg = pa.Config(**values)
    pa.check_config(cfg)
    return cfg


def validate_model(cfg):  # what --validate runs
    return pa.validate(cfg)


def train(cfg, out):  # the run's record; the agent it returns first is not needed here
    return pa.train(cfg, out)[1]


def without_wall_time(history):
    return [{k: v for k, v in record.items() if k != "wall_time"} for record in history]


SMOKE = dict(iterations=2, num_groups=2, group_size=2, optim_steps=3, eval_every=1)
SMOKE_ARGS = (  # the smallest run on the command line
    "--iterations 1 --num-groups 2 --group-size 2 --optim-steps 1 --eval-episodes 2 --quiet"
).split() + ["--final-eval-episodes", "2", "--confirm-episodes", "2"]
SCHEDULED = dict(SMOKE, temp_start=0.8, temp_end=0.1, lr_decay=True)  # T and lr both move


def interrupt_in_update(monkeypatch, algo, number):
    """Training is interrupted in its `number`th update (as Ctrl-C would): `number` - 1 kept."""
    real_update, calls = pa.UPDATES[algo], []

    def update(*args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            raise run_io.Interrupted
        return real_update(*args, **kwargs)

    monkeypatch.setitem(pa.UPDATES, algo, update)


def recorded(history, key="temperature"):
    return [record[key] for record in history]
