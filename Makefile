# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo gallery test test-fast lint format bench clean venv docs playground

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The lecture's 3-4-2 network trained by manual backprop, then the command line on a Playground
# dataset: a trained spiral classifier and a gradient check, with their pictures in demo_out/.
demo: $(STAMP)
	$(BIN)/python examples/00_demo.py
	$(BIN)/jaxmlp train --dataset spiral --noise 0.05 --hidden 16,16 --activation tanh --optimizer adam --lr 0.01 --epochs 300 --out demo_out
	$(BIN)/jaxmlp gradcheck --hidden 8,8 --activation tanh --loss mse --plot demo_out/gradcheck_tanh_mse.png
	@echo "pictures: $$(ls demo_out/*.png | tr '\n' ' ')"

# The pictures in examples/gallery/ (README.md, docs/index.md) are `make demo`'s, copied with the
# run's summary.json: rerun this after changing the demo or the plots. tests/test_docs.py checks
# the figures docs/index.md quotes against that summary.json.
GALLERY := decision_boundary.png neurons.png loss.png network.png gradcheck_tanh_mse.png summary.json
gallery: demo
	cp $(addprefix demo_out/,$(GALLERY)) examples/gallery/

# The Playground in your browser (Ctrl+C stops the server).
playground: $(STAMP)
	$(BIN)/jaxmlp playground

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYRIGHT_PYTHON_IGNORE_WARNINGS=1 $(BIN)/pyright --pythonpath $(BIN)/python

# Two workers (one per core); --dist loadfile keeps each module's shared compiled fixtures in one worker.
test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

# The inner-loop tier: all but the tests marked slow (subprocess and end-to-end runs, the examples,
# scikit-learn's estimator checks, benchmark smoke runs), and no lint. See tests/conftest.py.
# JAX's persistent compilation cache (in the venv, so `make clean` empties it) lets a rerun skip
# compiling the programs that did not change: about 2 minutes cold on 2 cores, 35 s warm.
test-fast: $(STAMP)
	JAX_COMPILATION_CACHE_DIR=$(CURDIR)/$(VENV)/jax-cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile -m "not slow"

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick

# The documentation site in site/ (open site/index.html), built in strict mode: any warning (a broken
# link, a docstring griffe cannot read, a public name without a reference entry) fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache demo_out site
