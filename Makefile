# Two commands set everything up on a fresh machine:
#   make demo   - builds .venv from setup.cfg (first time only), trains Inception-v4 on embedded digits
#   make test   - builds .venv the same way, runs the linters and the whole test suite (what CI runs)
#   make test-fast - the linters, unit and parity tests (tests/unit, tests/parity): minutes, for iterating
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast reproduce lint venv benchmark clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test,notebooks]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.inception_v4 --config=runlocal --workdir=workdirs/inception_v4_demo

# The layers' import contracts (pyproject.toml) and ruff.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# -n 2: two workers on the two cores; XLA's compiler is mostly single-threaded, so they overlap well.
test: lint
	$(PY) -m pytest -n 2 --durations=20 -m "not reproduce" tests notebooks --nbmake

test-fast: lint
	$(PY) -m pytest -n 2 --durations=10 -m "not reproduce" tests/unit tests/parity

# The claim runs CI cannot afford; writes reproduce/RESULTS.md (commit it with the commit it names).
# `make reproduce ARGS='-k retinanet'` reruns some of them; their rows are replaced, the others kept.
reproduce: $(STAMP)
	$(PY) -m pytest -n 2 -m reproduce tests $(ARGS)

benchmark: $(STAMP)
	$(PY) -m benchmarks.throughput --model inception_v4 --batch 8
	$(PY) -m benchmarks.throughput --model inception_resnet_v2 --batch 8

clean:
	rm -rf workdirs .jax_cache .pytest_cache
