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
# OpenMP threads that wait at a barrier sleep instead of spinning (measured: bench/omp_wait.py). A
# spinning thread burns the core its partner needs whenever another process holds one: a two-thread
# training beside one busy process ran 10–40× slower. libgomp reads this when torch loads it, so it
# is set here, before anything imports torch; a value already in the environment wins.
OMP_WAIT_POLICY = "PASSIVE"
os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
