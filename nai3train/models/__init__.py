"""Networks and the model bundles through which training and evaluation reach them."""
from .bundle import BUNDLES, ModelBundle, load_bundle
from .tiny import TinyBundle, TinyTagUNet
from . import sdxl as _sdxl  # noqa: F401  registers the SDXL bundle with load_bundle

__all__ = ["BUNDLES", "ModelBundle", "load_bundle", "load_pretrained", "pretrained_format", "TinyBundle", "TinyTagUNet"]


def pretrained_format(path: str) -> str:
    """The format of a model a researcher holds ('diffusers-sdxl'), or a clear error — checked
    before any work starts. Pickled checkpoints (``.ckpt``, ``.pt``, ``.pth``, ``.bin``) are refused:
    nai3 never unpickles."""
    from pathlib import Path

    p = Path(path)
    if p.suffix.lower() in (".ckpt", ".pt", ".pth", ".bin"):
        raise ValueError(f"{p}: pickled checkpoints are refused (loading them can run arbitrary code); "
                         "convert to .safetensors or a diffusers folder")
    if (p / "model_index.json").is_file():
        return "diffusers-sdxl"
    if p.is_file() and p.suffix == ".safetensors":
        raise NotImplementedError(f"{p}: single-file SDXL checkpoints are not supported yet; convert it to a "
                                  "diffusers folder (StableDiffusionXLPipeline.from_single_file(..., "
                                  "config=<local diffusers SDXL folder>).save_pretrained(DIR)) and pass DIR")
    raise FileNotFoundError(f"{p} is neither a nai3 checkpoint (meta.json), a diffusers SDXL folder "
                            "(model_index.json) nor an MLflow run with a checkpoint")


def load_pretrained(path: str) -> tuple[ModelBundle, dict]:
    """A model a researcher holds (see ``pretrained_format``), as a bundle plus what it says about
    its parameterisation (``prediction``, ``ztsnr``, ``source``). Offline only; anything missing is
    named."""
    pretrained_format(path)
    from .sdxl import load_sdxl_folder

    return load_sdxl_folder(path)
