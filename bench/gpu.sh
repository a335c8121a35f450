#!/usr/bin/env bash
# SDXL-size training throughput and MFU on a lent GPU (see bench/gpu_mfu.py); `--tiny` runs on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" bench/gpu_mfu.py "$@"
