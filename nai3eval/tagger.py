"""The domain tagger: a small multi-label CNN trained once on the benchmark's own images.

Inception and CLIP weights cannot be downloaded here, so, as anime practitioners use a Danbooru
tagger, we train one on the training split: its penultimate features feed the Fréchet distance
(torchmetrics, custom feature module) and its tag predictions measure prompt adherence. It is
cached on disk keyed by the dataset's content hash, and its validation accuracy is reported.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn


class Tagger(nn.Module):
    def __init__(self, num_tags: int, resolution: int, feature_dim: int = 32, width: int = 32):
        super().__init__()
        self.config = {"num_tags": num_tags, "resolution": resolution, "feature_dim": feature_dim, "width": width}
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GELU(), nn.Conv2d(w, w, 3, padding=1), nn.GELU(), nn.AvgPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GELU(), nn.AvgPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(8 * w, feature_dim), nn.GELU(),
        )
        self.head = nn.Linear(feature_dim, num_tags)

    @property
    def resolution(self) -> int:
        return self.config["resolution"]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features of images in [−1, 1]."""
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class TaggerReport:
    val_exact_match: float
    val_label_accuracy: float
    val_recall: float
    val_precision: float


def tag_predictions(tagger: Tagger, images: torch.Tensor, threshold: float = 0.5, batch: int = 256) -> torch.Tensor:
    """Boolean (N, num_tags) predictions for images in [−1, 1]."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(torch.sigmoid(tagger(images[i:i + batch])) > threshold)
    return torch.cat(out)


def validate(tagger: Tagger, images: torch.Tensor, targets: torch.Tensor) -> TaggerReport:
    pred = tag_predictions(tagger, images).float()
    tp = (pred * targets).sum()
    return TaggerReport(
        val_exact_match=float((pred == targets).all(1).float().mean()),
        val_label_accuracy=float((pred == targets).float().mean()),
        val_recall=float(tp / targets.sum().clamp_min(1)),
        val_precision=float(tp / pred.sum().clamp_min(1)),
    )


def train_tagger(images: torch.Tensor, targets: torch.Tensor, steps: int = 300, batch_size: int = 64,
                 lr: float = 3e-3, seed: int = 0) -> Tagger:
    """Multi-label BCE on (images in [−1, 1], multi-hot targets). Deterministic given ``seed``."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    tagger = Tagger(targets.shape[1], images.shape[-1])
    opt = torch.optim.AdamW(tagger.parameters(), lr=lr)
    for step in range(steps):
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        x = images[idx]
        x = x + 0.03 * torch.randn(x.shape, generator=gen)  # robustness to slightly noisy samples
        loss = F.binary_cross_entropy_with_logits(tagger(x), targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return tagger.eval()


def save_tagger(tagger: Tagger, vocab: list[str], report: TaggerReport, folder: str | Path,
                tag_frequency: dict[str, float] | None = None) -> Path:
    """Weights as safetensors plus JSON (config, vocabulary, validation report, the training set's
    tag frequencies — which define the rare and common tag groups)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tagger.state_dict().items()}, str(folder / "tagger.safetensors"))
    (folder / "tagger.json").write_text(json.dumps({"config": tagger.config, "vocab": vocab, "report": report.__dict__,
                                                    "tag_frequency": tag_frequency or {}}, indent=2))
    return folder


def load_tag_frequency(folder: str | Path) -> dict[str, float]:
    return json.loads((Path(folder) / "tagger.json").read_text()).get("tag_frequency", {})


def load_tagger(folder: str | Path) -> tuple[Tagger, list[str], TaggerReport]:
    folder = Path(folder)
    meta_f, w_f = folder / "tagger.json", folder / "tagger.safetensors"
    for f in (meta_f, w_f):
        if not f.is_file():
            raise FileNotFoundError(f"domain tagger file {f} is missing (train one with the flow or `nai3 eval`)")
    from nai3train.models.bundle import read_json_object
    from nai3train.models.files import check_weights_file

    meta = read_json_object(meta_f, "domain tagger description", ("config", "vocab", "report"))
    check_weights_file(w_f, "domain tagger weights")
    try:
        tagger = Tagger(**meta["config"])
        tagger.load_state_dict(load_file(str(w_f)))
        return tagger.eval(), list(meta["vocab"]), TaggerReport(**meta["report"])
    except (TypeError, ValueError, RuntimeError) as e:  # keys of another version; weights that do not fit
        raise ValueError(f"domain tagger folder {folder} is not one nai3 wrote, or is damaged: {str(e)[:300]}") \
            from None


TAGGER_MAX_SIDE = 64  # the domain tagger sees at most 64² (it reads colours, shapes and counts)


def ensure_tagger(train_dir: str | Path, eval_dir: str | Path, resolution: int, steps: int, seed: int,
                  folder: str | Path, scan_cache: str | Path | None = None) -> tuple[Path, TaggerReport]:
    """The domain tagger for a dataset: loaded from ``folder`` when trained before, else trained on
    the square training images (a centre crop cannot cut their objects off) at ``resolution`` up to
    ``TAGGER_MAX_SIDE`` (so a real-size folder fits in memory at that side), validated on the eval
    split, and saved with the training set's tag frequencies."""
    from nai3train.data import DatasetError, Vocabulary, load_folder, scan_folder, tag_frequencies
    from nai3train.data.folder import squares

    folder = Path(folder)
    if (folder / "tagger.json").is_file():
        return folder, load_tagger(folder)[2]
    side = min(resolution, TAGGER_MAX_SIDE)
    scan = scan_folder(train_dir, scan_cache)  # squares for training, every image's tags for the vocabulary
    try:
        train = squares(scan, side, square_only=True, root=train_dir)
    except DatasetError:
        train = squares(scan, side, root=train_dir)
    ev = load_folder(eval_dir, side, cache_file=scan_cache)
    all_tags = [r.tags for r in scan.records]
    vocab = Vocabulary.build(all_tags)
    tagger = train_tagger(train.images, vocab.multi_hot(train.tags), steps=steps, seed=seed)
    report = validate(tagger, ev.images, vocab.multi_hot(ev.tags))
    save_tagger(tagger, list(vocab.tags), report, folder, tag_frequency=tag_frequencies(all_tags))
    return folder, report
