# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install, audit two digits models and print their reports
#   make test   - create .venv, install (with the e3nn extra and test tools), run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU torch first, pinned: a loose spec would pull a multi-GB CUDA build on a machine with no torch.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,e3nn,examples]'
	# escnn (optional extra) needs gfortran for py3nj; the script installs both, or warns loudly and the tests skip
	bash scripts/install_escnn.sh $(VENV)
	# the explorer test drives a real headless browser: Debian chromium + playwright (or it skips loudly)
	bash scripts/install_browser.sh $(VENV)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/audit_digits.py

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_probe.py
	$(PY) benchmarks/bench_overhead.py
	$(PY) benchmarks/bench_figures.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
