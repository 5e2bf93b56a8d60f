# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs everything, runs the main job on its defaults
#   make test   creates .venv, installs everything, runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test simulate bench flower-demo docs venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch: the CPU build (a bare 'torch' requirement may pull a multi-GB CUDA build)
	$(PY) -m pip install --quiet "torch==2.13.0"
	# simulation: Flower's Simulation Engine (Ray), which tests/test_flower_simulation.py runs
	$(PY) -m pip install --quiet -e ".[train,flower,simulation,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/secagg demo

simulate: $(STAMP)
	$(VENV)/bin/secagg simulate

test: $(STAMP)
	$(PY) -m pytest -q

flower-demo: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) examples/flower_app/run_local.py

# the API reference from the docstrings (Sphinx), warnings as errors; open build/docs/html/index.html
docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W -q -b html docs/api build/docs/html

bench: $(STAMP)
	$(PY) benchmarks/bench_primitives.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis runs
