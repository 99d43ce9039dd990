# inboxsort: `make run` starts the daemon on config.toml, `make test` runs lint + tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED := $(abspath ../shared)
DATA ?= $(SHARED)/datasets/cats_and_dogs_filtered

# Offline ImageNet weights: Keras reads $KERAS_HOME/models before it downloads.
ifneq ($(wildcard $(SHARED)/keras/models),)
export KERAS_HOME := $(SHARED)/keras
endif
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONDONTWRITEBYTECODE := 1

# The exact recipe of the shipped model (see README, Results).
MODEL_FLAGS := --data $(DATA) --image-size 224 --epochs 10 --fine-tune-epochs 10 \
	--fine-tune-at 100 --batch-size 32 --seed 1337

.PHONY: install run test test-systemd lint pytest model model-160 bench bench-daemon bench-decode bench-learning bench-size bench-compare bench-runtimes bench-backfill bench-db bench-fleet clean bench-web chromium

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,postgres,web,web-test,cluster]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/inboxsort --config config.toml run

lint: install
	$(BIN)/ruff check inboxsort tests bench
	$(BIN)/ruff format --check inboxsort tests bench
	$(BIN)/mypy

pytest: install
	$(BIN)/python -m pytest -q

test: lint pytest

# The unit under a real systemd, in a Debian container (root; README "Tested under a real systemd").
test-systemd: install
	$(BIN)/python -m pytest -q -s tests/systemd

model: install
	rm -rf build/model
	mkdir -p build bench/results
	$(BIN)/inboxsort train $(MODEL_FLAGS) --export build/model 2>&1 | tee build/model.log
	@# Ship only a complete folder: model.keras, card.json and a flatbuffer that agrees.
	$(BIN)/python -c 'import json, pathlib, sys; d = pathlib.Path("build/model"); \
		c = json.loads((d / "card.json").read_text()); e = c.get("litert") or {}; \
		ok = (d / "model.keras").is_file() and e.get("agrees") and (d / e["file"]).is_file(); \
		sys.exit(0 if ok else "build/model: no model or no LiteRT flatbuffer that agrees with Keras (build/model.log says why)")'
	rm -rf inboxsort/builtin_model
	mv build/model inboxsort/builtin_model
	grep -v -e '━' -e '\[1m' build/model.log > bench/results/model.log || true

# The same recipe at the tutorial's 160 px, for the input-size comparison (not shipped).
model-160: install
	rm -rf build/model-160
	mkdir -p build bench/results
	$(BIN)/inboxsort train $(subst --image-size 224,--image-size 160,$(MODEL_FLAGS)) \
		--export build/model-160 2>&1 | tee build/model-160.log
	grep -v -e '━' -e '\[1m' build/model-160.log > bench/results/model-160.log || true

bench: bench-runtimes bench-daemon bench-learning bench-size bench-decode

bench-size: install
	$(BIN)/python bench/image_size.py

# The shared loader's CPU per image, with its JPEG draft rule and with the one it replaced.
bench-decode: install
	$(BIN)/python bench/decode.py --data $(DATA)/validation --labels inboxsort/builtin_model \
		| tee bench/results/decode.txt

bench-daemon: install
	$(BIN)/python bench/daemon_bench.py --data $(DATA)/validation | tee bench/results/daemon.txt

# LiteRT against Keras in one run: agreement, model-only, end to end, start-up, memory.
bench-runtimes: install
	$(BIN)/python bench/runtimes.py --data $(DATA)/validation

# Backfill through Ray against the daemon end to end on the same images, Ray's start-up, and
# the one writer's rows/s; writes bench/results/backfill.txt and .json.
bench-backfill: install
	$(BIN)/python bench/backfill.py --data $(DATA)/validation --large 5000

# One daemon node on SQLite against PostgreSQL (the local server), and the rows/s the server
# takes for the daemon's writes; writes bench/results/db_backends.txt and .json.
bench-db: install
	$(BIN)/python bench/db_backends.py --data $(DATA)/validation | tee bench/results/db_backends.txt

# One node against two sharing one inbox, on the local PostgreSQL server.
bench-fleet: install
	$(BIN)/python bench/fleet_bench.py --data $(DATA)/validation | tee bench/results/fleet.txt

# The daemon end to end against another revision, back to back: make bench-compare BASE=REV.
BASE ?= HEAD~1
bench-compare: install
	$(BIN)/python bench/compare.py --base $(BASE) --data $(DATA)/validation \
		| tee bench/results/compare.txt

# The review page over 10,000 filed images, a real `inboxsort web` timed over HTTP (issue 18).
bench-web: install
	$(BIN)/python bench/web_review.py --data $(DATA)/validation | tee bench/results/web.txt

# Debian's chromium for the browser tests (tests/web/test_browser.py); .ci/run does this too.
chromium:
	.ci/install-chromium

# Weak model → the real daemon files images, a simulated user mv-s the misfiled ones, the
# scheduled job retrains and the daemon swaps; writes bench/results/learning.txt.
bench-learning: install
	$(BIN)/python bench/learning_gain.py --data $(DATA)

clean:
	rm -rf $(VENV) build var .pytest_cache .mypy_cache .ruff_cache
