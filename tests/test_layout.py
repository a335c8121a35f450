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


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _internal_imports(path: Path, package: str) -> set[str]:
    """The modules of ``package`` that ``path`` imports at run time (absolute or relative, at any
    depth of the file; ``if TYPE_CHECKING:`` blocks left out)."""
    import ast

    here = _module_name(path).split(".")
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(block)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: not imported at run time
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == package}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == package:
                out.add(mod)
                out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def test_nai3eval_has_small_functions_small_modules_and_no_import_cycle():
    """No function in nai3eval/ longer than 60 lines, no module longer than 400, and no cycle among
    its modules (a package importing its own submodules is its own business, not a cycle)."""
    import ast

    files = sorted((ROOT / "nai3eval").rglob("*.py"))
    modules = {_module_name(f): f for f in files}
    for f in files:
        assert len(f.read_text().splitlines()) <= 400, f"{f.relative_to(ROOT)} is longer than 400 lines"
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                assert n <= 60, f"{f.relative_to(ROOT)}:{node.lineno} {node.name} is {n} lines"
    graph = {m: {i for i in _internal_imports(f, "nai3eval") if i in modules and i != m
                 and not (f.name == "__init__.py" and i.startswith(m + "."))} for m, f in modules.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            assert state.get(n) != 1, f"import cycle: {' → '.join(path + [m, n])}"
            if n not in state:
                visit(n, path + [m])
        state[m] = 2

    for m in modules:
        if m not in state:
            visit(m, [])


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """Positive control: two modules importing each other are reported."""
    pkg = tmp_path / "nai3eval"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("from . import a\nx = 1\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    import pytest

    with pytest.raises(AssertionError, match="import cycle"):
        test_nai3eval_has_small_functions_small_modules_and_no_import_cycle()
