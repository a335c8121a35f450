#!/usr/bin/env bash
# The GPU checks in one run: SDXL-base training throughput and MFU, bare vs tuned vs nai3's trainer
# (bench/train_mfu.py, configurations A–F), then nai3's
# SDXL sampling vs diffusers' pipeline at 1024², bf16, random weights, with sampling MFU and peak
# memory (bench/sdxl_sampler_overhead.py --in-memory sdxl). `--tiny` runs both on a CPU (tested).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if [[ " $* " == *" --tiny "* ]]; then
  "$PY" bench/train_mfu.py "$@"
  exec "$PY" bench/sdxl_sampler_overhead.py --in-memory tiny --batch 2 --steps 2 --repeats 1
fi
"$PY" bench/train_mfu.py "$@"
exec "$PY" bench/sdxl_sampler_overhead.py --in-memory sdxl --batch 4 --steps 28 --repeats 3 --resolution 1024
