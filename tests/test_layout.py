"""Packaging facts: mlflow/ must not shadow the mlflow package; the CLI lists what exists."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_mlflow_from_repo_root_is_the_installed_package():
    out = subprocess.run([sys.executable, "-c", "import mlflow, sys; print(mlflow.__file__)"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert "site-packages" in out and not out.startswith(str(ROOT / "mlflow"))
    assert not list((ROOT / "mlflow").glob("*.py"))


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for cmd in ("schedule", "data", "ablation"):
        assert cmd in out


def test_cli_schedule_json():
    out = subprocess.run([sys.executable, "-m", "flows.cli", "schedule", "--ztsnr", "--steps", "28",
                          "--first-sigma", "20000", "--json"], capture_output=True, text=True, check=True).stdout
    sig = json.loads(out)
    assert len(sig) == 29 and sig[0] == 20000 and abs(sig[1] - 56.18) < 0.01 and sig[-1] == 0


def test_cli_refuses_bad_config_before_any_work(tmp_path):
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"))
    p = subprocess.run([sys.executable, "-m", "flows.cli", "ablation", str(ROOT / "configs/smoke.yaml"),
                        "--set", "train.steps=-1", "--work-dir", str(tmp_path / "w")], capture_output=True, text=True,
                       env=env, cwd=tmp_path)
    assert p.returncode == 2 and "train.steps" in p.stderr
    assert not (tmp_path / "w").exists() and not (tmp_path / "mlflow").exists()


def _imports(path: Path) -> set[str]:
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_import_directions():
    """nai3train never imports nai3eval or flows; nothing but flows imports flows; no module of
    nai3eval or flows names the tiny model (they reach models through the bundle interface)."""
    for pkg, forbidden in (("nai3train", {"nai3eval", "flows"}), ("nai3eval", {"flows"})):
        for f in (ROOT / pkg).rglob("*.py"):
            assert not (_imports(f) & forbidden), f"{f.relative_to(ROOT)} imports {_imports(f) & forbidden}"
    for pkg in ("nai3eval", "flows"):
        for f in (ROOT / pkg).rglob("*.py"):
            assert "TinyTagUNet" not in f.read_text(), f"{f.relative_to(ROOT)} names the tiny model"
