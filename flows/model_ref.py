"""What ``nai3 eval`` was given, resolved once: a nai3 checkpoint folder, the MLflow run id of a
training run, a diffusers SDXL folder, or a single-file SDXL checkpoint (with ``--model-config``).

Everything the user named is checked here, before Prefect or MLflow start work: a missing path, a
pickle, a single file without its configs — each a clear error.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PICKLED_OR_WEIGHTS = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")


@dataclass(frozen=True)
class ModelRef:
    """A model to evaluate: where it is on disk, what kind it is, its display name, and the MLflow
    run it came from (a run id given on the command line)."""

    path: Path
    kind: Literal["nai3", "diffusers-sdxl", "single-file-sdxl"]
    name: str
    run_id: str | None = None

    @property
    def ours(self) -> bool:
        """A nai3 checkpoint: its variant, σ scale and sample shape are recorded with it."""
        return self.kind == "nai3"


def refuse_missing(given: str) -> None:
    """A path that does not exist is an error (checked before anything heavy is imported); any
    other string that is not a path is taken as an MLflow run id."""
    if not Path(given).exists() and (given.endswith(PICKLED_OR_WEIGHTS) or "/" in given
                                     and not given.startswith("runs:/")):
        raise FileNotFoundError(f"model {given} does not exist")


def checked_checkpoint(path: Path) -> str:
    """A nai3 checkpoint folder's name, once its metadata, model config and weights files are what
    nai3 writes (a damaged or hand-made one is refused before any work)."""
    from nai3train.checkpoint import load_model_meta
    from nai3train.models.bundle import read_config
    from nai3train.models.files import check_weights_file

    name = load_model_meta(path)["variant"]["name"]
    read_config(path)
    for weights in ("ema.safetensors", "model.safetensors"):
        if (path / weights).exists():
            check_weights_file(path / weights, "checkpoint weights")
    return name


def resolve_model(given: str, tracking_uri: str | None, download_to: Path, model_config: str | None = None
                  ) -> ModelRef:
    """``given`` as a :class:`ModelRef`; an MLflow run id is resolved to its ``checkpoint``
    artifact (downloaded under ``download_to``)."""
    from nai3train.models import pretrained_format
    from nai3train.ops.tracking import resolve_checkpoint, resolve_tracking

    refuse_missing(given)
    path, run_id = Path(given), None
    if not path.exists():
        run_id = given.removeprefix("runs:/").split("/")[0]
        path = Path(resolve_checkpoint(given, resolve_tracking(tracking_uri)[0], download_to))
    if (path / "meta.json").is_file():
        return ModelRef(path, "nai3", checked_checkpoint(path), run_id)
    kind = pretrained_format(str(path), model_config)  # refuses a pickle or an unknown format
    return ModelRef(path, kind, path.stem if path.is_file() else path.resolve().name, run_id)
