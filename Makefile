# Policy Annealing: `make test` builds .venv from requirements.txt when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SEEDS ?= 0 1 2 3 4
LUNAR_SEEDS ?= 0 1 2
LUNAR_ALGO ?= err
COMPARE_SEEDS ?= 0 1 2

.PHONY: help test cartpole lunar tree bandit compare bench bench-quick bench-cartpole bench-lunar bench-report profile clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

test: $(VENV)/.installed  ## run the test suite (builds .venv first if needed)
	$(PY) -m pytest -q -n 2 -W "ignore:builtin type:DeprecationWarning" test_policy_annealing.py

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

compare: $(VENV)/.installed  ## CartPole: ERR (T>0) vs plain PPO (T=0) vs PPO + entropy bonus
	mkdir -p bench
	for s in $(COMPARE_SEEDS); do \
	  $(PY) policy_annealing.py --algo err --seed $$s --label "err T=0.05" --quiet --overwrite --out runs/compare/err-s$$s || exit 1; \
	  $(PY) policy_annealing.py --algo err --seed $$s --temp-start 0 --temp-end 0 --label "ppo T=0" --quiet --overwrite --out runs/compare/ppo-s$$s || exit 1; \
	  $(PY) policy_annealing.py --algo err --seed $$s --temp-start 0 --temp-end 0 --entropy-bonus 0.01 --label "ppo + entropy bonus 0.01" --quiet --overwrite --out runs/compare/bonus-s$$s || exit 1; \
	done
	$(PY) policy_annealing.py report runs/compare/*/experiment.json -o bench/compare.md
	$(PY) policy_annealing.py plot runs/compare/*/experiment.json -o bench/compare.png
	$(PY) policy_annealing.py plot runs/compare/*/experiment.json --metric entropy -o bench/compare_entropy.png
	cat bench/compare.md

bench-quick: $(VENV)/.installed  ## CartPole only: seeds 0-4 of every algorithm
	$(MAKE) bench-cartpole bench-report

bench: $(VENV)/.installed  ## the benchmark: CartPole seeds 0-4 x 3 algos, LunarLander seeds 0-2
	$(MAKE) bench-cartpole bench-lunar bench-report

bench-report:
	$(PY) policy_annealing.py report runs/bench/*/experiment.json -o bench/results.md
	$(PY) policy_annealing.py plot runs/bench/*/experiment.json -o bench/curves.png
	cat bench/results.md

# One run at a time, so the seconds are those of a run alone on the machine.
bench-cartpole:
	mkdir -p bench
	for algo in grouped value err; do for s in $(SEEDS); do \
	  $(PY) policy_annealing.py --env CartPole-v1 --algo $$algo --seed $$s --stop-when-solved \
	    --quiet --overwrite --out runs/bench/CartPole-v1-$$algo-s$$s || exit 1; done; done

bench-lunar:
	for s in $(LUNAR_SEEDS); do \
	  $(PY) policy_annealing.py --env LunarLander-v3 --algo $(LUNAR_ALGO) --seed $$s \
	    --stop-when-solved --quiet --overwrite --out runs/bench/LunarLander-v3-$(LUNAR_ALGO)-s$$s || exit 1; done

profile: $(VENV)/.installed  ## where the time goes: one CartPole and one LunarLander run
	$(PY) bench/profile_run.py CartPole-v1 grouped 4
	$(PY) bench/profile_run.py LunarLander-v3 err 2

clean:  ## remove runs and caches (keeps .venv and bench/)
	rm -rf runs __pycache__ .pytest_cache .hypothesis
