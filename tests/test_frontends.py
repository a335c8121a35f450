"""Front-end conventions as σ tables: each diffusers preset against diffusers' own scheduler, the
ComfyUI and diffusers clamps against their closed forms, and the first σ of every preset."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nai3train.diffusion import Schedule
from nai3train.diffusion.frontends import (COMFYUI_ALPHA_BAR_T, DIFFUSERS_ALPHA_BAR_T, FRONTENDS, first_sigma,
                                           frontend_sigmas)


def _diffusers_sigmas(spacing: str, steps: int, ztsnr: bool) -> np.ndarray:
    from diffusers import EulerDiscreteScheduler

    s = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                               rescale_betas_zero_snr=ztsnr, timestep_spacing=spacing, steps_offset=1)
    s.set_timesteps(steps)
    return s.sigmas.double().numpy()


@pytest.mark.parametrize("steps", [1, 7, 28, 50])
@pytest.mark.parametrize("spacing", ["trailing", "leading"])
@pytest.mark.parametrize("ztsnr", [True, False])
def test_diffusers_presets_equal_the_installed_scheduler(spacing, steps, ztsnr):
    """Same σ list as diffusers' EulerDiscreteScheduler (its float32 ᾱ: to 1e-4 relative)."""
    ours = frontend_sigmas(f"diffusers-{spacing}", Schedule.sdxl(ztsnr=ztsnr), steps).numpy()
    theirs = _diffusers_sigmas(spacing, steps, ztsnr)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)


def test_the_first_sigma_of_each_preset():
    """The numbers users compare, from closed forms: σ_T = √((1 − ᾱ_T)/ᾱ_T) for the clamps."""
    comfy = math.sqrt((1 - 4.8973451890853435e-08) / 4.8973451890853435e-08)
    assert comfy == pytest.approx(4518.76, abs=0.01)
    assert first_sigma("comfyui") == pytest.approx(comfy, rel=1e-9)
    assert first_sigma("diffusers-trailing") == pytest.approx(math.sqrt(2.0**24 - 1), rel=1e-9)  # ≈ 4096
    assert first_sigma("nai") == 20000.0
    assert first_sigma("forge") == pytest.approx(14.6146, abs=1e-3)
    assert first_sigma("kohya-preview") == pytest.approx(14.6146, abs=1e-3)
    leading = first_sigma("diffusers-leading", steps=28)  # t = 946 on the rescaled table
    assert leading == pytest.approx(float(_diffusers_sigmas("leading", 28, True)[0]), rel=1e-4)
    assert 30 < leading < 50


def test_a_changed_clamp_is_caught():
    """The clamps are the front-ends' constants: changing one changes the first σ the tests pin."""
    assert FRONTENDS["comfyui"].alpha_bar_t == COMFYUI_ALPHA_BAR_T == 4.8973451890853435e-08
    assert FRONTENDS["diffusers-trailing"].alpha_bar_t == DIFFUSERS_ALPHA_BAR_T == 2.0 ** -24
    from dataclasses import replace

    import nai3train.diffusion.frontends as fe

    shifted = replace(FRONTENDS["comfyui"], alpha_bar_t=2.0 ** -24)
    table = fe.frontend_table(shifted, ztsnr=True)
    assert float(table[-1]) != pytest.approx(4518.76, abs=1.0)


def test_model_units_and_a_model_without_ztsnr():
    """A tiny model's table is scaled (dimension scale); a model trained without ZTSNR is sampled on
    the plain table by every front-end but NovelAI."""
    small = Schedule.sdxl(ztsnr=True, scale=0.25)
    assert torch.allclose(frontend_sigmas("comfyui", small, 28), frontend_sigmas("comfyui", Schedule.sdxl(ztsnr=True), 28) * 0.25)
    plain = Schedule.sdxl(ztsnr=False)
    for name in ("comfyui", "diffusers-trailing", "forge"):
        assert float(frontend_sigmas(name, plain, 28)[0]) == pytest.approx(14.6146, abs=1e-3)
    assert float(frontend_sigmas("nai", plain, 28)[0]) == 20000.0
    with pytest.raises(ValueError, match="comfyui"):
        frontend_sigmas("a1111", plain, 28)


@pytest.fixture(scope="module")
def vpred_ztsnr_sdxl(tmp_path_factory):
    from .sdxl_tiny import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("fe") / "model", prediction_type="v_prediction", ztsnr=True)


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
def test_a_diffusers_preset_point_is_the_model_as_diffusers_samples_it(vpred_ztsnr_sdxl, spacing):
    """The independent reference for the whole front-end path (σ list, σ → t through the clamped
    table, first state, Euler, CFG): diffusers' own StableDiffusionXLPipeline with its
    EulerDiscreteScheduler set to ``rescale_betas_zero_snr`` and the spacing, choosing its timesteps
    itself, lands on the same image as nai3's ``frontend`` point of a v-prediction ZTSNR model."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from nai3eval.checkpoint import load_model
    from nai3eval.prompts import PromptSet
    from nai3eval.sampling import first_sigma as point_first_sigma
    from nai3eval.sampling import generate
    from nai3eval.setting import Setting

    ck = load_model(vpred_ztsnr_sdxl, device="cpu")
    assert ck.variant.prediction == "v" and ck.variant.ztsnr
    size, steps, cfg = ck.bundle.native_size, 6, 4.0
    prompts = [["red_circle", "black_background"], ["blue_square", "white_background"]]
    eps = torch.randn((2, *ck.sample_shape), generator=torch.Generator().manual_seed(0))
    ps = PromptSet(prompts, torch.arange(2), eps)
    point = Setting("frontend", 0.0, cfg, steps=steps, frontend=f"diffusers-{spacing}")
    ours = generate(ck, point, ps).images

    pipe = StableDiffusionXLPipeline.from_pretrained(vpred_ztsnr_sdxl, local_files_only=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, rescale_betas_zero_snr=True,
                                                        timestep_spacing=spacing, steps_offset=1)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler.set_timesteps(steps)
    first = float(pipe.scheduler.sigmas[0])
    assert point_first_sigma(ck.denoiser.schedule, point) == pytest.approx(first / ck.denoiser.schedule.scale,
                                                                           rel=1e-4)
    cond, uncond = ck.bundle.encode(ps.texts, [size] * 2), ck.bundle.uncond(2, [size] * 2)
    latents = pipe(prompt_embeds=cond["prompt_embeds"], negative_prompt_embeds=uncond["prompt_embeds"],
                   pooled_prompt_embeds=cond["pooled"], negative_pooled_prompt_embeds=uncond["pooled"],
                   latents=eps * first / float(pipe.scheduler.init_noise_sigma), num_inference_steps=steps,
                   guidance_scale=cfg, height=size[0], width=size[1], output_type="latent").images
    theirs = ck.bundle.to_pixels(latents).float()
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-3)


def test_each_front_end_is_a_point_with_its_first_sigma_and_its_distance_to_nai(tmp_path, tiny_config):
    """``eval.frontends: all`` on a trained v + ZTSNR checkpoint: one ``frontend`` point per preset
    (nai first), its start and its recorded first σ the preset's own (closed forms above), the
    metrics measured as at any point; r is 0 for nai itself and, since forge and kohya-preview
    sample the same σ list, equal for those two; the points table, report.json and the report's
    section "In each front-end" carry them."""
    import json

    from nai3eval.checkpoint import load_checkpoint
    from nai3eval.evaluate import build_instruments, evaluate_variant
    from nai3eval.metrics import InstrumentSettings
    from nai3eval.reporting.columns import points_table
    from nai3eval.reporting.report import write_report
    from nai3train.config import VariantConfig
    from nai3train.data import BucketedDataset, Vocabulary, default_buckets, load_folder, scan_folder, synthesize
    from nai3train.trainer import train_variant

    synthesize(tmp_path / "b", 48, 8, 8, seed=0)
    data = BucketedDataset.from_scan(scan_folder(tmp_path / "b" / "train"), default_buckets(8))
    cfg = tiny_config(["train.steps=2", "eval.prompts=2", "eval.seeds_per_prompt=2", "eval.steps=3",
                       "eval.cfg_scales=[1, 4]", "eval.first_sigmas=[14.6]", "eval.frontends=all"])
    assert cfg.eval.frontends == tuple(FRONTENDS)
    v = VariantConfig(name="v", prediction="v", ztsnr=True)
    ck = load_checkpoint(train_variant(cfg, v, data, Vocabulary.build(data.tags), tmp_path / "run",
                                       progress=False).checkpoint)
    ev = load_folder(tmp_path / "b" / "eval", 8)
    inst = build_instruments(InstrumentSettings.of(cfg.eval), ev.images, ev.tags, None, [])
    rec = evaluate_variant(ck, cfg.eval, inst, progress=False)
    run = rec.runs[("v", 0)]
    points = rec.settings(run, "frontend")
    assert [p.frontend for p in points] == list(FRONTENDS) and {p.cfg_scale for p in points} == {4.0}
    for p in points:
        want = first_sigma(p.frontend, ztsnr=True, steps=3)
        assert p.start == pytest.approx(want, rel=1e-9) and rec.scalar(run, p, "first_sigma") == pytest.approx(want)
        assert rec.scalar(run, p, "brightness_black") is not None and rec.per_image(run, p, "brightness") is not None
    r = {p.frontend: rec.scalar(run, p, "frontend_r") for p in points}
    assert r["nai"] == 0.0 and r["forge"] == r["kohya-preview"] > 0 and all(math.isfinite(x) for x in r.values())
    for p in rec.settings(run, "sweep"):  # the sweep's points record what they sampled first too
        assert rec.scalar(run, p, "first_sigma") == p.start
    table = points_table(rec)
    assert [row[3] for row in table.rows][-6:] == list(FRONTENDS) and table.head[4] == "first σ"
    write_report(rec, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## In each front-end" in md and "| v | comfyui | 4518.76 |" in md
    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    fe = {p["frontend"]: p["first_sigma"] for p in doc["points"] if p["kind"] == "frontend"}
    assert fe["diffusers-trailing"] == pytest.approx(4096.0, rel=1e-4) and fe["nai"] == 20000.0


def test_the_front_end_sentence_reads_the_registered_margins_both_ways():
    """A preset whose black prompts miss their reference by the registered margin or more washes the
    model out; below it, it does not; overshoot and r likewise — the rule can come out each way."""
    from nai3eval.claims.spec import load_claims_spec
    from nai3eval.record import Run
    from nai3eval.reporting.frontends import FrontendRow, margins, sentences
    from nai3eval.setting import Setting
    from nai3train.config import VariantConfig

    spec = load_claims_spec()
    m = margins(spec)
    assert m["C2-black-shown"] == next(c.rule.margin for c in spec.claims if c.id == "C2-black-shown")
    run = Run(VariantConfig(name="mine", prediction="v", ztsnr=True), 0, [], [])

    def row(name, black, overshoot=0.0, r=0.0):
        return FrontendRow(run, Setting("frontend", 1.0, 5.0, frontend=name), black, 0.0, overshoot, 0.0, 0.0, r, {})

    edge = m["C2-black-shown"]
    text = sentences([row("nai", edge * 0.99), row("forge", edge), row("comfyui", 0.0, overshoot=1.0),
                      row("diffusers-leading", 0.0, r=m["C9-317"] * 2)], spec)[0]
    assert text == ("**mine**: as NovelAI samples it, within every threshold; beyond that, forge washes out black; "
                    "comfyui burns black; diffusers-leading moves the picture.")
    both = sentences([row("nai", edge), row("forge", edge * 2), row("comfyui", 0.0, overshoot=1.0)], spec)[0]
    assert both == ("**mine**: as NovelAI samples it, it washes out black; beyond that, comfyui burns black "
                    "(forge: nothing further).")
    assert sentences([row("nai", 0.0), row("forge", 0.0)], spec)[0].endswith(
        "within every threshold; no other front-end breaks a further threshold.")
