# Each target sets up .venv (pinned by requirements.lock) on first use.
VENV := .venv
PY := $(VENV)/bin/python
# Optional extras on top, e.g. `make test EXTRAS=ray,slurm` (CI: the launcher tests run).
# They resolve their own pins: Ray's clash with the lock's cloudpickle and joblib.
EXTRAS ?=
comma := ,
STAMP := $(VENV)/.installed$(if $(EXTRAS),-$(EXTRAS))

.PHONY: sweep test slow lint setup

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	$(if $(EXTRAS),$(PY) -m pip install -q -e '.[dev$(comma)$(EXTRAS)]')
	touch $(STAMP)

sweep: $(STAMP)
	$(PY) train.py -m activation=relu,tanh depth=3,5,7

test: $(STAMP)
	$(PY) -m pytest -q

slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
