# Policy Annealing: `make test` builds .venv from requirements.txt when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LUNAR_ALGO ?= err
COMPARE_SEEDS ?= 1000 1001 1002

.PHONY: help test lint cartpole lunar tree bandit compare bench bench-cartpole bench-lunar bench-lunar-long bench-stability \
	bench-report bench-peer gif profile clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

test: $(VENV)/.installed  ## run the test suite (builds .venv first if needed)
	$(PY) -m pytest -q -n 2 -W "ignore:builtin type:DeprecationWarning" test_policy_annealing.py

lint: $(VENV)/.installed  ## ruff's lint rules and its formatter, as configured in ruff.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

cartpole: $(VENV)/.installed  ## train grouped annealing on CartPole-v1 until solved
	$(PY) policy_annealing.py --env CartPole-v1 --algo grouped --stop-when-solved

lunar: $(VENV)/.installed  ## train the best algorithm on LunarLander-v3 until solved
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

bandit: $(VENV)/.installed  ## the 3-armed bandit: PG vs entropy bonus vs annealing
	mkdir -p bench
	$(PY) toy_bandit.py --plot bench/bandit.png --json runs/bandit.json

compare: $(VENV)/.installed  ## CartPole: ERR (T>0) vs PPO (T=0) vs PPO + entropy bonus, report seeds
	mkdir -p bench
	for s in $(COMPARE_SEEDS); do \
	  $(PY) policy_annealing.py --algo err --seed $$s --label "err T=0.05" --quiet --overwrite --out runs/compare/err-s$$s || exit 1; \
	  $(PY) policy_annealing.py --algo err --seed $$s --temp-start 0 --temp-end 0 --label "PPO, T=0, no advantage normalisation" --quiet --overwrite --out runs/compare/ppo-s$$s || exit 1; \
	  $(PY) policy_annealing.py --algo err --seed $$s --temp-start 0 --temp-end 0 --entropy-bonus 0.01 --label "PPO + entropy bonus 0.01, no advantage normalisation" --quiet --overwrite --out runs/compare/bonus-s$$s || exit 1; \
	done
	$(PY) report.py report runs/compare/*/experiment.json -o bench/compare.md
	$(PY) report.py plot runs/compare/*/experiment.json -o bench/compare.png
	$(PY) report.py plot runs/compare/*/experiment.json --metric entropy -o bench/compare_entropy.png
	cat bench/compare.md

# Report seeds: no sweep ever used them (sweeps used seeds 0-29). Budgets are per run.
REPORT_SEEDS ?= 1000 1001 1002 1003 1004 1005 1006 1007 1008 1009 1010 1011 1012 1013 1014 1015 1016 1017 1018 1019
LUNAR_SEEDS ?= 1000 1001 1002 1003 1004
STABILITY_SEEDS ?= 1010 1011 1012 1013 1014
CARTPOLE_BUDGET ?= 100000
LUNAR_BUDGET ?= 500000
JOBS ?= 2
RUN = $(PY) policy_annealing.py --stop-when-solved --quiet --overwrite
PEER = $(PEER_PY) bench/peer_sb3.py

bench: $(VENV)/.installed .venv-peer/.installed  ## the benchmark: bench-cartpole, then bench-lunar
	$(MAKE) bench-cartpole bench-lunar bench-report

# Every algorithm and the SB3 peer in one queue, $(JOBS) runs at a time, so all run under the same
# load; the env-step budget ends every run (--iterations is set past it). Env steps are exactly
# reproducible; seconds move with the load. The RL-Zoo's LunarLander PPO has no schedule that
# depends on its budget, so the peer runs its tuned settings on our budget. $(1) env, $(2) seeds,
# $(3) env-step budget.
define bench_queue
	mkdir -p bench runs/bench
	for s in $(2); do for algo in grouped value err; do \
	  echo "$(RUN) --env $(1) --algo $$algo --seed $$s --max-env-steps $(3) --iterations 100000 --out runs/bench/$(1)-$$algo-s$$s"; done; \
	  echo "$(PEER) --env $(1) --seed $$s --max-env-steps $(3) --out runs/bench/$(1)-sb3-ppo-s$$s"; \
	done | xargs -P $(JOBS) -I CMD sh -c CMD
endef

bench-cartpole: $(VENV)/.installed .venv-peer/.installed  ## CartPole-v1: 3 algos + SB3 PPO x 20 report seeds
	$(call bench_queue,CartPole-v1,$(REPORT_SEEDS),$(CARTPOLE_BUDGET))

bench-lunar: $(VENV)/.installed .venv-peer/.installed  ## LunarLander-v3: 3 algos + SB3 PPO x 5 report seeds
	$(call bench_queue,LunarLander-v3,$(LUNAR_SEEDS),$(LUNAR_BUDGET))

# Does the main job stay solved? Full 100-iteration CartPole runs, no early stop.
# SB3 PPO beside them: trained to the zoo's budget (its schedules end there), evaluated throughout.
bench-stability: $(VENV)/.installed .venv-peer/.installed  ## CartPole-v1: 3 algos + SB3 PPO x 5 seeds, no early stop
	for s in $(STABILITY_SEEDS); do for algo in grouped value err; do \
	  echo "$(PY) policy_annealing.py --quiet --overwrite --env CartPole-v1 --algo $$algo --seed $$s --out runs/stability/CartPole-v1-$$algo-s$$s"; \
	done; echo "$(PEER) --keep-going --env CartPole-v1 --seed $$s --out runs/stability/CartPole-v1-sb3-ppo-s$$s"; \
	done | xargs -P $(JOBS) -I CMD sh -c CMD
	$(PY) report.py report runs/stability/*/experiment.json -o bench/stability.md
	cat bench/stability.md

# LunarLander grouped with 30 minutes of training per seed (the reliability goal's budget).
LUNAR_LONG_MINUTES ?= 30
bench-lunar-long: $(VENV)/.installed  ## LunarLander-v3 grouped x 5 report seeds, ~30 min of training each
	mkdir -p bench runs/lunar30
	for s in $(LUNAR_SEEDS); do \
	  echo "$(RUN) --env LunarLander-v3 --algo grouped --seed $$s --max-minutes $(LUNAR_LONG_MINUTES) --iterations 1000000 --out runs/lunar30/LunarLander-v3-grouped-s$$s"; \
	done | xargs -P $(JOBS) -I CMD sh -c CMD
	$(PY) report.py report runs/lunar30/*/experiment.json -o bench/lunar30.md
	cat bench/lunar30.md

bench-report:
	$(PY) report.py report runs/bench/*/experiment.json -o bench/results.md
	$(PY) report.py plot runs/bench/*/experiment.json -o bench/curves.png
	cat bench/results.md

GIF_CHECKPOINT ?= runs/bench/LunarLander-v3-err-s1000/checkpoint.pt
gif: $(VENV)/.installed  ## bench/lander.gif: a greedy and a sampled episode of GIF_CHECKPOINT (from bench-lunar)
	$(PY) bench/render_gif.py $(GIF_CHECKPOINT) -o bench/lander.gif

profile: $(VENV)/.installed  ## where the time goes: one CartPole and one LunarLander run
	$(PY) bench/profile_run.py CartPole-v1 grouped 4
	$(PY) bench/profile_run.py LunarLander-v3 err 2

clean:  ## remove runs and caches (keeps .venv and bench/)
	rm -rf runs __pycache__ .pytest_cache .hypothesis

# Peer baseline alone: SB3 PPO with the RL-Zoo's tuned hyperparameters (bench/peer_sb3.py), in its
# own venv so that `make test` stays lean. bench-cartpole and bench-lunar already run it.
PEER_PY := .venv-peer/bin/python

.venv-peer/.installed: requirements-peer.txt
	$(PYTHON) -m venv .venv-peer
	.venv-peer/bin/pip install --quiet -r requirements-peer.txt
	touch $@

bench-peer: .venv-peer/.installed  ## SB3 PPO (RL-Zoo) alone on the report seeds, same criterion and budgets
	for s in $(REPORT_SEEDS); do \
	  $(PEER) --env CartPole-v1 --seed $$s --max-env-steps $(CARTPOLE_BUDGET) --out runs/bench/CartPole-v1-sb3-ppo-s$$s || exit 1; done
	for s in $(LUNAR_SEEDS); do \
	  $(PEER) --env LunarLander-v3 --seed $$s --max-env-steps $(LUNAR_BUDGET) --out runs/bench/LunarLander-v3-sb3-ppo-s$$s || exit 1; done
