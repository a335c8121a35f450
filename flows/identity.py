"""What determines a number, as a value: the training, evaluation and instrument identities.

A stored result is reused exactly while everything that could change its numbers is unchanged.
Each identity is the code that can change one kind of number, read as its syntax tree (a comment,
a docstring or a re-wrapped line changes nothing), plus the versions of the libraries that
compute it. Code that only moves, logs, stores or shows numbers lives in visibly separate
packages and is left out:

* ``nai3train/ops/`` — MLflow tracking and its journal, progress output, atomic writes, secrets
  redaction, thread settings, checkpoint transport, the MLflow run around a training;
* ``nai3eval/reporting/`` and ``nai3eval/claims/`` — sinks, grids, the points table, plots, the
  report, and every decision taken from the measurement record;
* ``flows/`` — orchestration and the CLI.

A wrong boundary (an edit on the left-out side that does change numbers) is caught by the
numerics fingerprint (:mod:`flows.fingerprint`), recorded beside every identity.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import platform
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (what is covered, what is left out inside it), as paths relative to the repository root
TRAINING_CODE = (("nai3train",), ("nai3train/ops",))
EVALUATION_CODE = (("nai3eval", "nai3train"),
                   ("nai3eval/reporting", "nai3eval/claims", "nai3train/ops", "nai3train/training",
                    "nai3train/trainer.py"))
# the domain tagger: its network and training, the folder reader and vocabulary it learns from
INSTRUMENT_CODE = (("nai3eval/tagger.py", "nai3train/data"), ())

TRAINING_LIBRARIES = ("torch", "diffusers", "transformers")
EVALUATION_LIBRARIES = ("torch", "diffusers", "transformers", "numpy", "scipy", "pillow", "torchmetrics",
                        "clean-fid", "onnxruntime")
INSTRUMENT_LIBRARIES = ("torch", "pillow")
# recorded with every run, never part of an identity
RECORDED_LIBRARIES = ("torch", "diffusers", "transformers", "numpy", "mlflow", "prefect")


@dataclass(frozen=True)
class Identity:
    """One identity: the digest of each covered source file and the library versions.

    ``digest`` keys reuse; ``files`` and ``libraries`` are kept (as an artifact) so that a later
    identity can say what changed."""

    kind: str
    files: dict[str, str] = field(default_factory=dict)
    libraries: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps([self.kind, sorted(self.files.items()), sorted(self.libraries.items())])
                              .encode()).hexdigest()[:12]

    def changes_from(self, before: "Identity") -> list[str]:
        """What differs from ``before``, in words: files changed, added or removed, and libraries."""
        out = [f"{k} {before.libraries.get(k, '—')} → {v}" for k, v in sorted(self.libraries.items())
               if before.libraries.get(k) != v]
        out += [f"{k} removed" for k in sorted(set(before.libraries) - set(self.libraries))]
        out += [f"{p} changed" for p in sorted(self.files) if p in before.files and before.files[p] != self.files[p]]
        out += [f"{p} added" for p in sorted(set(self.files) - set(before.files))]
        out += [f"{p} removed" for p in sorted(set(before.files) - set(self.files))]
        return out

    def to_dict(self) -> dict:
        return {"kind": self.kind, "digest": self.digest, "files": dict(self.files), "libraries": dict(self.libraries)}

    @classmethod
    def from_dict(cls, d: dict) -> "Identity":
        return cls(str(d["kind"]), {str(k): str(v) for k, v in d["files"].items()},
                   {str(k): str(v) for k, v in d["libraries"].items()})


def code_digest(source: str) -> str:
    """A Python file as what it does: its syntax tree without docstrings (comments and layout are
    not in the tree). The tree's printed form depends on the Python minor version, which is
    therefore part of every identity."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()[:16]


def _covered(root: Path, spec: tuple[tuple[str, ...], tuple[str, ...]]) -> list[Path]:
    include, exclude = spec
    files: set[Path] = set()
    for part in include:
        p = root / part
        files |= {p} if p.is_file() else set(p.rglob("*.py"))
    return sorted(f for f in files if not any(f.relative_to(root).as_posix() == x or
                                              f.relative_to(root).as_posix().startswith(x + "/") for x in exclude))


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    out = {"python": ".".join(platform.python_version_tuple()[:2])}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = "absent"
    return out


def _identity(kind: str, spec: tuple, libraries: tuple[str, ...], root: Path) -> Identity:
    return Identity(kind, {f.relative_to(root).as_posix(): _file_digest(f, f.stat().st_mtime_ns, f.stat().st_size)
                           for f in _covered(root, spec)}, library_versions(libraries))


@lru_cache(maxsize=4096)
def _file_digest(path: Path, _mtime: int, _size: int) -> str:
    return code_digest(path.read_text())


def training_identity(root: Path | None = None) -> Identity:
    """The code and libraries that can change a trained weight (module docstring)."""
    return _identity("training", TRAINING_CODE, TRAINING_LIBRARIES, root or ROOT)


def evaluation_identity(root: Path | None = None) -> Identity:
    """The code and libraries that can change a measurement of a given checkpoint."""
    return _identity("evaluation", EVALUATION_CODE, EVALUATION_LIBRARIES, root or ROOT)


def instrument_identity(root: Path | None = None) -> Identity:
    """The code and libraries that can change the trained domain tagger."""
    return _identity("instrument", INSTRUMENT_CODE, INSTRUMENT_LIBRARIES, root or ROOT)


def all_sources_digest(root: Path | None = None) -> str:
    """Every source of the two packages, byte for byte: what a cached fingerprint is keyed by (an
    edit anywhere, on either side of the boundary, computes it again)."""
    root = root or ROOT
    h = hashlib.sha256()
    for f in sorted([*(root / "nai3train").rglob("*.py"), *(root / "nai3eval").rglob("*.py")]):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def version_tags() -> dict[str, str]:
    """The library versions every run records as MLflow tags (``nai3.version.<library>``)."""
    return {f"nai3.version.{k}": v for k, v in library_versions(RECORDED_LIBRARIES).items()}
