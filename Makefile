# Policy Annealing: `make test` builds .venv from requirements.txt when it is missing.
# The benchmarks are in bench/Makefile: `make -f bench/Makefile help`, from this folder.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LUNAR_ALGO ?= err
PYTEST = $(PY) -m pytest -q -W "ignore:builtin type:DeprecationWarning"

.PHONY: help test test-fast test-exact test-io lint cartpole lunar tree grid gaussian bandit gif clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'
	@echo "benchmarks (compare, bench, bench-*, profile): make -f bench/Makefile help"

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

test: $(VENV)/.installed  ## run every test (test_*.py; builds .venv first if needed)
	$(PYTEST) -n 2 --dist worksteal test_*.py  # worksteal: the long tests do not queue behind one worker

test-fast: $(VENV)/.installed  ## tier 1: the math and property tests (no update, training run or subprocess)
	$(PYTEST) -m "not slow" test_policy_annealing.py test_continuous.py test_temperature.py test_gridworld.py

test-exact: $(VENV)/.installed  ## tier 2: training runs that must reach an exact law (the long tail)
	$(PYTEST) -n 2 --dist worksteal -m exact test_*.py

test-io: $(VENV)/.installed  ## tier 3: files, resume, signals, the command line, report.py, the package, bench/sweep.py
	$(PYTEST) -n 2 --dist worksteal test_run_io.py test_report.py test_packaging.py test_sweep.py

lint: $(VENV)/.installed  ## ruff's lint rules and its formatter, as configured in ruff.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

cartpole: $(VENV)/.installed  ## grouped on CartPole-v1 to a confirmed solve (at most 100 iterations)
	$(PY) policy_annealing.py --env CartPole-v1 --algo grouped --stop-when-solved

lunar: $(VENV)/.installed  ## LUNAR_ALGO (err) on LunarLander-v3 to a confirmed landing or its budget
	$(PY) policy_annealing.py --env LunarLander-v3 --algo $(LUNAR_ALGO) --stop-when-solved

# pg = --algo err at T = 0; every policy's exact KL is taken at the T of its column.
tree: $(VENV)/.installed  ## all algorithms (and pg) on two trees at T = 0.5, 2: exact KL to the law
	for algo in grouped value err pg; do for t in 0 1; do for T in 0.5 2; do \
	  run=runs/tree/$$algo-t$$t-T$$T; a=$$algo; train_T=$$T; \
	  if [ $$algo = pg ]; then a=err; train_T=0; fi; \
	  $(PY) policy_annealing.py --env Tree-v0 --algo $$a --env-kwargs "{\"tree_seed\": $$t}" \
	    --temp-start $$train_T --temp-end $$train_T --overwrite --out $$run 2>/dev/null || exit 1; \
	  $(PY) policy_annealing.py --validate --env Tree-v0 --env-kwargs "{\"tree_seed\": $$t}" \
	    --temp-start $$T --temp-end $$T --eval-episodes 1 --load-model $$run/checkpoint.pt | tail -1 || exit 1; \
	done; done; done

# GridWorld-v0's law by soft value iteration: seed 004's grid (rewards / 100, horizon 10) and a
# 2x3 grid (horizon 4); the seed grid at T = 1 is left out: the law goes to the goal (0.18 of its
# mass) by the one 10-move path a policy must find by chance (docs/experiments.md).
GRID_SEED := {"reward_scale": 0.01, "horizon": 10}
GRID_SMALL := {"grid": [[0, -1, 2], [-1, 0.5, 1]], "start": [1, 0], "horizon": 4}
grid: $(VENV)/.installed  ## all algorithms on two grids at two temperatures: exact KL to the law
	for algo in grouped value err; do for case in seed:2 seed:4 small:0.5 small:2; do \
	  g=$${case%:*}; T=$${case#*:}; run=runs/grid/$$algo-$$g-T$$T; \
	  kw='$(GRID_SEED)'; [ $$g = small ] && kw='$(GRID_SMALL)'; \
	  $(PY) policy_annealing.py --env GridWorld-v0 --algo $$algo --env-kwargs "$$kw" \
	    --temp-start $$T --temp-end $$T --quiet --overwrite --out $$run 2>/dev/null || exit 1; \
	  $(PY) policy_annealing.py --validate --env GridWorld-v0 --env-kwargs "$$kw" \
	    --temp-start $$T --temp-end $$T --eval-episodes 1 --load-model $$run | tail -1 || exit 1; \
	done; done

# QuadraticBandit-v0's law is N(mu, T/A): the tests' two bandits, 1 and 3 action dims.
BANDIT_1 := {"mean": [0.5], "curvature": [2.0]}
BANDIT_3 := {"mean": [0.5, -1.0, 2.0], "curvature": [1.0, 4.0, 0.5]}
gaussian: $(VENV)/.installed  ## all algorithms on the quadratic bandit, 1 and 3 dims, T = 0.1, 1: exact KL to N(mu, T/A)
	for algo in grouped value err; do for d in 1 3; do for T in 0.1 1; do \
	  run=runs/gaussian/$$algo-d$$d-T$$T; kw='$(BANDIT_1)'; [ $$d = 3 ] && kw='$(BANDIT_3)'; \
	  $(PY) policy_annealing.py --env QuadraticBandit-v0 --algo $$algo --env-kwargs "$$kw" \
	    --temp-start $$T --temp-end $$T --quiet --overwrite --out $$run 2>/dev/null || exit 1; \
	  echo "$$algo, $$d dims: `$(PY) policy_annealing.py --validate --eval-episodes 1 \
	    --load-model $$run/checkpoint.pt 2>/dev/null | tail -1`"; \
	done; done; done

bandit: $(VENV)/.installed  ## the 3-armed bandit: PG vs entropy bonus vs annealing -> bench/bandit.png
	mkdir -p bench runs
	$(PY) toy_bandit.py --plot bench/bandit.png --json runs/bandit.json

# The GIF's policy: grouped's LunarLander default on report seed 2001, trained first if missing
# (it landed at 10.1M env steps, 1,685 s of training: bench/results.md). T and lr are held, so env
# steps fix the run, not its 30 minutes; or pass GIF_CHECKPOINT=path/to/checkpoint.pt.
GIF_RUN := runs/gif/LunarLander-v3-grouped-s2001
GIF_CHECKPOINT ?= $(GIF_RUN)/checkpoint.pt
gif: $(VENV)/.installed $(GIF_CHECKPOINT)  ## bench/lander.gif: a greedy and a sampled episode of GIF_CHECKPOINT (a grouped LunarLander run)
	$(PY) bench/render_gif.py $(GIF_CHECKPOINT) -o bench/lander.gif

$(GIF_RUN)/checkpoint.pt: | $(VENV)/.installed
	$(PY) policy_annealing.py --env LunarLander-v3 --algo grouped --seed 2001 --max-minutes 0 \
	  --max-env-steps 11000000 --quiet --overwrite --out runs/gif/LunarLander-v3-grouped-s2001

clean:  ## remove runs/ (report.py's default outputs too) and caches; keeps .venv and bench/
	rm -rf runs __pycache__ .pytest_cache .hypothesis
