"""Networks and the model bundles through which training and evaluation reach them."""
from .bundle import BUNDLES, ModelBundle, load_bundle
from .tiny import TinyBundle, TinyTagUNet
from . import sdxl as _sdxl  # noqa: F401  registers the SDXL bundle with load_bundle

__all__ = ["BUNDLES", "ModelBundle", "load_bundle", "load_pretrained", "pretrained_format", "TinyBundle", "TinyTagUNet"]


def pretrained_format(path: str, model_config: str | None = None) -> str:
    """The format of a model a researcher holds ('diffusers-sdxl' or 'single-file-sdxl'), or a clear
    error — checked before any work starts. Pickled checkpoints (``.ckpt``, ``.pt``, ``.pth``,
    ``.bin``) are refused: nai3 never unpickles. A single-file checkpoint needs ``model_config``, a
    local diffusers SDXL folder for the configs and tokenizers (diffusers would otherwise reach for
    the Hub)."""
    from pathlib import Path

    from .files import RefusedWeights, check_weights_file, check_weights_folder, is_pickled

    p = Path(path)
    if p.is_file() and is_pickled(p) or p.suffix.lower() in (".ckpt", ".pt", ".pth", ".bin"):
        raise RefusedWeights(f"{p}: pickled checkpoints are refused (loading them can run arbitrary code); "
                             "convert to .safetensors or a diffusers folder")
    if (p / "model_index.json").is_file():
        from .bundle import read_json_object

        read_json_object(p / "model_index.json", "diffusers model index")
        if (p / "scheduler" / "scheduler_config.json").is_file():
            read_json_object(p / "scheduler" / "scheduler_config.json", "diffusers scheduler config")
        check_weights_folder(p, "model folder")
        return "diffusers-sdxl"
    if p.is_file() and p.suffix == ".safetensors":
        check_weights_file(p, "model")
        if not model_config:
            raise FileNotFoundError(f"{p} is a single-file checkpoint: pass --model-config DIR, a local diffusers "
                                    "SDXL folder (model_index.json, scheduler/, unet/, vae/, text_encoder*/ configs, "
                                    "tokenizer/, tokenizer_2/) that supplies its configs and tokenizers — nai3 does "
                                    "not let diffusers fetch them from the Hub")
        if not (Path(model_config) / "model_index.json").is_file():
            raise FileNotFoundError(f"--model-config {model_config} is not a diffusers SDXL folder: "
                                    f"{Path(model_config) / 'model_index.json'} is missing")
        return "single-file-sdxl"
    raise FileNotFoundError(f"{p} is neither a nai3 checkpoint (meta.json), a diffusers SDXL folder "
                            "(model_index.json) nor an MLflow run with a checkpoint")


def load_pretrained(path: str, model_config: str | None = None) -> tuple[ModelBundle, dict]:
    """A model a researcher holds (see ``pretrained_format``), as a bundle plus what it says about
    its parameterisation (``prediction``, ``ztsnr``, ``source``). Offline only; anything missing is
    named."""
    from .sdxl import load_sdxl_folder, load_sdxl_single_file

    if pretrained_format(path, model_config) == "single-file-sdxl":
        return load_sdxl_single_file(path, model_config)
    return load_sdxl_folder(path)
