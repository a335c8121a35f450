"""The CFG-overshoot metric: exact fractions on constructed images, and it reaches every view
(points table, per-image CSV, MLflow names) through its declaration alone."""
import math

import pytest
import torch

from nai3eval.metrics import Samples, declared_outputs
from nai3eval.metrics.overshoot import Overshoot
from nai3eval.prompts import PromptSet
from tests.toys import measure


def _samples(images: torch.Tensor) -> Samples:
    n = len(images)
    return Samples(images, torch.zeros(n), PromptSet([["a"]], torch.zeros(n, dtype=torch.long), torch.zeros(n, 1)))


def test_overshoot_is_the_fraction_of_finite_pixels_outside_the_range():
    images = torch.zeros(4, 3, 4, 4)  # 48 values each
    images[0].view(-1)[:12] = 1.5  # a quarter above white
    images[1].view(-1)[:24] = -1.01  # half below black
    images[2].view(-1)[:] = 1.0  # exactly white is displayable
    images[3].view(-1)[:16] = math.nan  # non-finite values are not pixels: 4 of the other 32 overshoot
    images[3].view(-1)[16:20] = -3.0
    r = measure(Overshoot(), _samples(images))
    assert r["image_overshoot_frac"] == pytest.approx([0.25, 0.5, 0.0, 4 / 32])
    assert r["overshoot_frac"] == pytest.approx((0.25 + 0.5 + 0.0 + 0.125) / 4)
    nothing = measure(Overshoot(), _samples(torch.full((2, 3, 4, 4), math.inf)))
    assert "overshoot_frac" not in nothing and all(math.isnan(v) for v in nothing["image_overshoot_frac"])


def test_overshoot_grows_with_the_guidance_push():
    """An image scaled by s (CFG's extrapolation, schematically) overshoots more as s grows."""
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(8, 3, 8, 8, generator=gen) * 2 - 1
    fracs = [measure(Overshoot(), _samples(base * s))["overshoot_frac"] for s in (0.9, 1.2, 2.0, 5.0)]
    assert fracs[0] == 0.0 and all(a < b for a, b in zip(fracs, fracs[1:]))


def test_a_declared_metric_reaches_the_table_the_csv_and_mlflow_names():
    from nai3eval.reporting.columns import points_table
    from nai3eval.record import Record, Run
    from nai3eval.setting import Setting
    from nai3train.config import VariantConfig

    assert {"overshoot_frac", "image_overshoot_frac"} <= {o.name for o in declared_outputs()}
    rec = Record()
    run = rec.add_run(Run(VariantConfig(name="v"), 0, [["a"]], [0, 0]))
    rec.put_all(run, Setting("sweep", 14.6, 5.0), measure(Overshoot(), _samples(torch.full((2, 3, 2, 2), 2.0))))
    table = points_table(rec)
    assert "overshoot ↓" in table.head and table.rows[0][table.head.index("overshoot ↓")] == "1.000"
    assert "overshoot" in table.csv().splitlines()[0]


def test_a_wide_points_table_splits_into_titled_blocks_each_column_under_its_header():
    """Every declared column with a value gets a header; too wide for the terminal, the table is
    one titled block per kind of metric, each repeating the key columns, and the CSV stays whole."""
    from nai3eval.reporting.columns import BLOCKS, points_table
    from nai3eval.record import Record, Run
    from nai3eval.setting import Setting
    from nai3train.config import VariantConfig

    rec = Record()
    run = rec.add_run(Run(VariantConfig(name="nai-v-ztsnr"), 0, [["a"]], [0, 0]))
    values = {o.name: 0.5 for o in declared_outputs() if o.column and not o.per_image}
    rec.put_all(run, Setting("sweep", 14.6, 5.0), values)
    table = points_table(rec)
    assert len(table.head) == 5 + len(values) == len(table.rows[0])
    whole = table.text()
    assert whole == table.text(width=10_000) and len(whole.splitlines()[0].split("  ")) >= len(values)
    split = table.text(width=100)
    titles = [t for t, _ in BLOCKS]
    assert [line[:-1] for line in split.splitlines() if line.endswith(":")] == titles
    for block in split.split("\n\n"):
        head = block.splitlines()[1]
        assert head.split()[:6] == ["seed", "variant", "CFG", "σ₀", "first", "σ"]
        assert len(block.splitlines()[2].split()) == len(block.splitlines()[3].split())  # a rule under each column
    for h in table.head[5:]:
        assert sum(block.splitlines()[1].count(h) > 0 for block in split.split("\n\n")) >= 1
    assert len(table.csv().splitlines()[0].split(",")) == len(table.head)
