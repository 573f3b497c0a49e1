# Two commands set everything up on a fresh machine:
#   make demo   - builds .venv from setup.cfg (first time only), trains Inception-v4 on embedded digits
#   make test   - builds .venv the same way, runs the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv benchmark clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test,notebooks]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.inception_v4 --config=runlocal --workdir=workdirs/inception_v4_demo

# -n 2: two workers on the two cores; XLA's compiler is mostly single-threaded, so they overlap well.
test: $(STAMP)
	$(PY) -m pytest -n 2 --durations=20 tests notebooks --nbmake

benchmark: $(STAMP)
	$(PY) -m benchmarks.throughput --model inception_v4 --batch 8
	$(PY) -m benchmarks.throughput --model inception_resnet_v2 --batch 8

clean:
	rm -rf workdirs .jax_cache .pytest_cache
