"""Prefect flows: thin orchestration over nai3train and nai3eval (paths and run ids only)."""
import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nai3 never downloads: a missing local file is an error
# the ephemeral Prefect API (make demo, nai3 ablation without a server) on a busy 2-core box can take
# longer than Prefect's default 20 s to start
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
