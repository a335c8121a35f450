"""Prefect flows: thin orchestration over nai3train and nai3eval (paths and run ids only)."""
import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nai3 never downloads: a missing local file is an error
# the ephemeral Prefect API (make demo, nai3 ablation without a server) on a busy 2-core box can take
# longer than Prefect's default 20 s to start
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# a Prefect server restart (an upgrade, a moved database) takes tens of seconds: the default 5
# retries with doubling back-off (≈ 1 min) would crash a parent waiting on its children or a flow
# run reporting its state; 7 retries ride out ≈ 4 min. Set before Prefect reads its settings; the
# deployments' flow-run processes get it from prefect.yaml, workers from docs/operations.md's command
os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "7")
# OpenMP's wait policy is left to libgomp (it spins a while at a barrier, then sleeps), measured with
# bench/omp_wait.py on 2 cores, two-thread training: alone, spin 138 img/s vs PASSIVE 85; beside
# one busy process, spin 29 vs PASSIVE 70. Neither wins both, so the layout decides instead: local
# units run one thread each by default (flows/local_units.py), and one thread never waits at a
# barrier. A multi-thread run that shares its cores says so once (nai3train/ops/progress.py), with
# OMP_WAIT_POLICY=PASSIVE as the fix when the sharing is meant to last.
