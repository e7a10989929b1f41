# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install what the study needs, run the augmentation study (examples/study_digits.py)
#   make test   - create .venv, install everything (with the e3nn and escnn extras and test tools), run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

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

# the demo installs only what the study imports: the package, scikit-learn (the bundled digits), bokeh (the explorer)
$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[examples,explorer]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(PY) examples/study_digits.py

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_probe.py
	$(PY) benchmarks/bench_overhead.py
	$(PY) benchmarks/bench_figures.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
