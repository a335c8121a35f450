"""Tiny stand-ins built by the tests themselves (no downloads): a WD14-style ONNX tagger."""
from pathlib import Path

import torch


def toy_wd14(folder: Path, names: list[str]) -> tuple[Path, Path]:
    """A WD14-layout tagger exported with torch.onnx (NHWC BGR 0–255 in, sigmoid out) whose first
    tag fires on dark images, its second on bright ones, every other tag never; and its
    ``selected_tags.csv``. Returns (model.onnx, selected_tags.csv)."""
    class Toy(torch.nn.Module):
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3), keepdim=False).unsqueeze(1) / 255.0
            never = [m * 0 - 20] * (len(names) - 2)
            return torch.sigmoid(torch.cat([(0.5 - m) * 40, (m - 0.5) * 40, *never], dim=1))

    folder.mkdir(parents=True, exist_ok=True)
    model, tags = folder / "model.onnx", folder / "selected_tags.csv"
    torch.onnx.export(Toy(), torch.zeros(1, 24, 24, 3), str(model), input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}}, dynamo=False)
    tags.write_text("tag_id,name,category,count\n" + "".join(f"{i},{n},0,10\n" for i, n in enumerate(names, 1)))
    return model, tags


def measure(metric, samples) -> dict:
    """One point through a metric's update / compute / reset cycle: what it declares, computed."""
    metric.reset()
    metric.update(samples)
    return metric.compute()
