"""The report as views of the record: Markdown and HTML show the same sections and points, the CSV
the same table, and sample-grid figures find their grids for any first training seed."""
import re

import numpy as np
import torch

from nai3eval.reporting.grid import save_grid
from nai3eval.reporting.report import write_report
from nai3eval.reporting.sinks import grid_name

from .test_claims import fake_results


def _grids(record, folder):
    out = {}
    for run in record.runs.values():
        for s in record.settings(run, "sweep"):
            path = save_grid(torch.zeros(2, 3, 4, 4), folder / f"{grid_name(run, s)}.png")
            out[path.stem] = path
    return out


def test_grid_figures_find_their_grids_when_the_first_seed_is_not_zero(tmp_path):
    """Grid files of seed k carry ``@seed<k>`` (train.seeds: [1]); the figures look them up by the same name."""
    record = fake_results(seeds=(1,), arms=("sdxl-eps", "v-ztsnr"))
    grids = _grids(record, tmp_path / "grids")
    assert all("@seed1__" in name for name in grids)
    _, folder = write_report(record, tmp_path / "report", grids=grids)
    assert (folder / "samples_variant_x_cfg.png").is_file() and (folder / "samples_variant_x_sigma.png").is_file()
    assert "samples_variant_x_cfg.png" in (folder / "report.md").read_text()


def test_markdown_and_html_show_the_same_sections_and_points(tmp_path):
    from .test_claims import at_kmax

    record = fake_results(seeds=(0, 1, 2), arms=("sdxl-eps", "v", "v-ztsnr"))
    _, folder = write_report(record, tmp_path, spec=at_kmax(3))
    md, page = (folder / "report.md").read_text(), (folder / "report.html").read_text()
    md_titles = re.findall(r"^#{2,3} (.+)$", md, flags=re.M)
    html_titles = [t.replace("&#x27;", "'") for t in re.findall(r"<h[23]>(.+?)</h[23]>", page)]
    assert md_titles == html_titles and "Evaluation points" in md_titles and "Checks" in md_titles
    # verdicts are coloured in the claims table and in each claim's detail, qualified ones too
    assert page.count("<b style='color:#1a7f37'>supported</b>") >= 2
    assert "interval only" not in page
    assert "<i>Estimand:</i>" in page and "*Estimand:*" not in page  # the Markdown marks become HTML …
    assert "log CFG* (baseline" in page  # … and a real asterisk in the spec's text stays
    csv_rows = (folder / "points.csv").read_text().strip().splitlines()
    n_points = sum(len(record.settings(r, "sweep")) for r in record.runs.values())
    assert len(csv_rows) == 1 + n_points
    assert md.count("\n| 1 | v-ztsnr |") == page.count("<tr><td>1</td><td>v-ztsnr</td>") == 2 * 3
    kid = csv_rows[0].split(",").index("KID ↓")
    values = [float(r.split(",")[kid]) for r in csv_rows[1:]]
    assert np.all(np.isfinite(values))
