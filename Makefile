# Policy Annealing: `make test` builds .venv from requirements.txt when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SEEDS ?= 0 1 2 3 4

.PHONY: help test cartpole lunar tree bandit compare bench bench-quick clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

test: $(VENV)/.installed  ## run the test suite (builds .venv first if needed)
	$(PY) -m pytest -q -n 2 test_policy_annealing.py

cartpole: $(VENV)/.installed  ## train grouped annealing on CartPole-v1
	$(PY) policy_annealing.py --env CartPole-v1 --algo grouped --stop-when-solved

lunar: $(VENV)/.installed  ## train on LunarLander-v3
	$(PY) policy_annealing.py --env LunarLander-v3 --algo grouped --stop-when-solved

clean:  ## remove runs and caches (keeps .venv)
	rm -rf runs __pycache__ .pytest_cache .hypothesis
