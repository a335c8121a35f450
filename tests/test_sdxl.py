"""The SDXL path with tiny random-weight components saved by the test and loaded back."""
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from nai3eval.record import Record
from nai3eval.setting import Setting
from nai3train.config import ConfigError, load_config
from nai3train.data import BucketedDataset, Vocabulary, default_buckets, scan_folder, synthesize
from nai3train.models.sdxl import encode_prompts, load_sdxl
from nai3train.trainer import train_variant

from .sdxl_tiny import build_tiny_sdxl
from .toys import toy_wd14

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    return build_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "model")


def test_missing_folder_or_component_names_the_path(tiny_sdxl, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_sdxl(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sdxl, broken)
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(FileNotFoundError, match=str(broken / "text_encoder_2")):
        load_sdxl(broken)
    with pytest.raises(ConfigError, match="model.path"):
        load_config(ROOT / "configs/smoke.yaml", ["model.kind=sdxl", f"model.path={tmp_path / 'nowhere'}"])


def test_sdxl_text_conditioning_shapes(tiny_sdxl):
    c = load_sdxl(tiny_sdxl)
    emb, pooled = encode_prompts(c, ["red circle, black background", ""])
    assert emb.shape == (2, 32, 32) and pooled.shape == (2, 16)  # both encoders' 16-d states concatenated
    assert not torch.allclose(emb[0], emb[1])


def test_sdxl_path_trains_two_steps_and_caches(tiny_sdxl, tmp_path):
    synthesize(tmp_path / "bench", 24, 4, 16, seed=0)
    data = BucketedDataset.from_scan(scan_folder(tmp_path / "bench" / "train"), default_buckets(16))
    cfg = load_config(ROOT / "configs/smoke.yaml", ["model.kind=sdxl", f"model.path={tiny_sdxl}", "train.steps=2",
                                                     "train.batch_size=2", "data.resolution=16"])
    variant = cfg.variants[1]
    out = tmp_path / "work" / "variants" / "v"
    r = train_variant(cfg, variant, data, Vocabulary.build(data.tags), out, progress=False)
    assert torch.isfinite(torch.tensor(r.final_loss))
    assert (r.checkpoint / "model.safetensors").is_file()
    cache = tmp_path / "work" / "cache"
    n = len(list(cache.glob("*.safetensors")))
    assert n >= len(data) and n > 0
    train_variant(cfg, variant, data, Vocabulary.build(data.tags), tmp_path / "work" / "variants" / "w",
                  progress=False)
    assert len(list(cache.glob("*.safetensors"))) == n  # second run hits the cache


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def tiny_sdxl_pipe(request, tmp_path_factory):
    return build_tiny_sdxl(tmp_path_factory.mktemp("sdxl-pipe") / "model", prediction_type=request.param)


def test_nai3_euler_through_the_sdxl_bundle_equals_diffusers_pipeline(tiny_sdxl_pipe):
    """The independent reference: diffusers' StableDiffusionXLPipeline with EulerDiscreteScheduler,
    given the same explicit σ list, latents, prompt embeddings and guidance, lands on the same
    latents as nai3's Euler through the SDXL bundle and nai3's denoiser."""
    from diffusers import StableDiffusionXLPipeline

    from nai3eval.checkpoint import load_model
    from nai3train.diffusion import sampling_sigmas
    from nai3train.diffusion.samplers import GuidedDenoiser, get_sampler, initial_state

    ck = load_model(tiny_sdxl_pipe, device="cpu")
    want_pred = "v" if "v_prediction" in (tiny_sdxl_pipe / "scheduler" / "scheduler_config.json").read_text() else "eps"
    assert ck.variant.prediction == want_pred and not ck.variant.ztsnr  # read from the scheduler config
    size = ck.bundle.native_size
    prompts = ["red circle, black background", "blue square, white background"]
    cond, uncond = ck.bundle.encode(prompts, [size] * 2), ck.bundle.uncond(2, [size] * 2)
    sig = sampling_sigmas(ck.denoiser.schedule, 6, 14.6146, "native")
    gen = torch.Generator().manual_seed(0)
    eps = torch.randn((2, *ck.sample_shape), generator=gen)
    ours = get_sampler("euler")(GuidedDenoiser(ck.denoiser, cond, uncond, 4.0), initial_state(eps, float(sig[0])), sig)

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_pipe, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler.set_timesteps(sigmas=[float(s) for s in sig])
    init = float(pipe.scheduler.init_noise_sigma)
    theirs = pipe(prompt_embeds=cond["prompt_embeds"], negative_prompt_embeds=uncond["prompt_embeds"],
                  pooled_prompt_embeds=cond["pooled"], negative_pooled_prompt_embeds=uncond["pooled"],
                  latents=eps * float(sig[0]) / init, sigmas=[float(s) for s in sig], guidance_scale=4.0,
                  height=size[0], width=size[1], output_type="latent").images
    assert theirs.shape == ours.shape
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))
    pixels = ck.bundle.to_pixels(ours)
    assert pixels.shape == (2, 3, *size) and pixels.abs().max() <= 1


def test_bf16_unet_weights_take_fp32_in_and_give_fp32_out(tiny_sdxl):
    """Evaluation on a GPU runs the UNet in bf16 weights (``SDXLBundle.to``): the network casts the
    scaled input itself and hands back fp32, within bf16 rounding of the fp32 weights' answer; a
    pipeline already in memory wraps the same modules (nothing copied)."""
    from diffusers import StableDiffusionXLPipeline

    from nai3train.models.sdxl import SDXLBundle

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl, local_files_only=True)
    bundle = SDXLBundle.from_pipeline(pipe)
    assert bundle.components.unet is pipe.unet
    size = bundle.native_size
    cond = bundle.encode(["red circle, black background"] * 2, [size] * 2)
    x = torch.randn((2, *bundle.sample_shape(*size)), generator=torch.Generator().manual_seed(1))
    c_noise = torch.tensor(999.0, dtype=torch.float64)
    full = bundle.network(x, c_noise, cond)
    bundle.to(dtype=torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16
    half = bundle.network(x, c_noise, cond)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=0.05, atol=0.05 * float(full.abs().max()))
    assert not torch.equal(half, full)  # it really ran in bf16


@pytest.fixture(scope="module")
def tiny_sdxl_v(tmp_path_factory):
    return build_tiny_sdxl(tmp_path_factory.mktemp("sdxl-v") / "model", prediction_type="v_prediction")


@pytest.mark.slow
def test_cli_evaluates_a_diffusers_folder_with_parameterisation_from_the_scheduler(tiny_sdxl_v, tmp_path):
    tiny_sdxl_pipe = tiny_sdxl_v  # v-prediction: the scheduler config must override nai3's ε default
    import json
    import os
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# C2/C3 need black and white backgrounds\nred circle, black background\n"
                       "blue square, white background\n1 object, green triangle, grey background\n")
    from nai3eval.realdata import write_pngs

    # a researcher's reference folder: plain images, no tag files
    reference = write_pngs(torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1,
                           tmp_path / "reference")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = tmp_path / "points.json"
    script = Path(sys.executable).parent / "nai3"  # the installed command, run outside the repository
    cmd = [str(script), "eval", str(tiny_sdxl_pipe), "--work-dir", "w", "--tracking-uri", uri, "--no-progress",
           "--prompts", str(prompts), "--reference", str(reference), "--experiment", "my-eval", "--json", str(out),
           "--set", "eval.prompts=2", "--set", "eval.seeds_per_prompt=2", "--set", "eval.steps=3",
           "--set", "eval.cfg_scales=[3]", "--set", "eval.first_sigmas=[14.6]"]
    env = dict(os.environ, MLFLOW_TRACKING_URI="")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=elsewhere)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    res = json.loads(out.read_text())
    want = "v" if "v_prediction" in (tiny_sdxl_pipe / "scheduler" / "scheduler_config.json").read_text() else "eps"
    run = res["runs"][0]
    assert run["variant"]["prediction"] == want and run["variant"]["dimension_scale"] is False
    assert {m["setting"]["cfg_scale"] for m in res["measurements"] if m["setting"]["kind"] == "sweep"} == {3.0}
    assert run["prompts"][0] == ["red_circle", "black_background"]
    assert f"parameterisation: {want}-prediction" in p.stdout and "scheduler_config.json" in p.stdout
    assert "#/experiments/" in p.stdout and "skipped CLIPScore (eval.clip_path)" in p.stdout
    fd = [m["value"] for m in res["measurements"] if m["metric"] == "fd_inception"]  # no flag: the standard one
    assert len(fd) == 1 and fd[0] > 0
    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("my-eval").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("nai3.kind") == "eval-only")
    tag = parent.data.tags[f"nai3.parameterization.{tiny_sdxl_pipe.name}"]
    assert tag.startswith(want) and "scheduler_config.json" in tag
    # its own work folder (relative to where it ran) and report: its grids only, no checks of training data
    reports = list((elsewhere / "w").glob("eval-my-eval/eval-*/report"))
    assert len(reports) == 1, list((elsewhere / "w").rglob("report"))
    grids = [g.name for g in reports[0].glob("*__*.png")]
    assert grids and all(g.startswith(f"{tiny_sdxl_pipe.name}__") for g in grids)
    doc = json.loads((reports[0] / "report.json").read_text())
    assert {c["id"] for c in doc["checks"]} == {"C1-check"}
    assert not (elsewhere / "w" / "eval-my-eval" / "benchmark").exists()  # nothing of the benchmark was made
    # the user's word wins over the scheduler config
    p = subprocess.run(cmd + ["--prediction", "eps" if want == "v" else "v", "--ztsnr"], capture_output=True,
                       text=True, env=env, timeout=600, cwd=elsewhere)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["runs"][0]["variant"]["prediction"] != want and res["runs"][0]["variant"]["ztsnr"] is True
    pickled = tmp_path / "model.ckpt"
    pickled.write_bytes(b"not really")
    p = subprocess.run(cmd[:2] + [str(pickled)] + cmd[3:], capture_output=True, text=True, env=env, timeout=600,
                       cwd=elsewhere)
    assert p.returncode == 2 and "pickled checkpoints are refused" in p.stderr


def test_a_trained_sdxl_checkpoint_is_evaluated_through_the_same_sweep(tiny_sdxl, tmp_path, tiny_config):
    from nai3eval.evaluate import build_instruments, evaluate_variant
    from nai3eval.metrics import InstrumentSettings
    from nai3eval.checkpoint import load_checkpoint

    synthesize(tmp_path / "bench", 24, 4, 16, seed=0)
    data = BucketedDataset.from_scan(scan_folder(tmp_path / "bench" / "train"), default_buckets(16))
    cfg = load_config(ROOT / "configs/smoke.yaml", ["model.kind=sdxl", f"model.path={tiny_sdxl}", "train.steps=2",
                                                     "train.batch_size=2", "data.resolution=16", "eval.prompts=2",
                                                     "eval.seeds_per_prompt=2", "eval.steps=2", "eval.cfg_scales=[2]",
                                                     "eval.first_sigmas=[14.6, inf]"])
    variant = cfg.variants[1]  # v + ZTSNR
    r = train_variant(cfg, variant, data, Vocabulary.build(data.tags), tmp_path / "work" / "variants" / "v",
                      progress=False)
    ck = load_checkpoint(r.checkpoint, device="cpu")
    assert ck.bundle.kind == "sdxl" and ck.variant.ztsnr and ck.sample_shape == (4, 8, 8)
    from nai3train.data import load_folder

    ev = load_folder(tmp_path / "bench" / "eval", 16)
    model, tags = toy_wd14(tmp_path / "wd14", ["1girl", "2girls", "1boy"])
    ec = cfg.eval.model_copy(update={"wd14_model": str(model), "wd14_tags": str(tags)})
    inst = build_instruments(InstrumentSettings.of(ec), ev.images, ev.tags, None, [])
    res = evaluate_variant(ck, ec, inst, progress=False)
    run = next(iter(res.runs.values()))
    points = res.settings(run, "sweep")
    assert [p.name for p in points] == ["cfg2-sigma14.6-euler2", "cfg2-sigmainf-euler2"]
    assert all(res.scalar(run, p, "brightness_black") is not None for p in points)
    assert res.scalar(run, Setting("x0", math.inf), "nonfinite_frac") == 0.0  # v's exact limit through the UNet and VAE
    # C4 on a real model: WD14's count tags at 1.5× and 2× the side (the benchmark's prompts ask no
    # WD14 count, so every image is NaN: measured where a prompt file asks for 1girl/2girls)
    for r in (res, Record.from_dict(json.loads(json.dumps(res.to_dict())))):
        run = next(iter(r.runs.values()))
        count = r.settings(run, "count")
        assert run.counter == "WD14 tagger" and {(s.canvas, s.start) for s in count} == {
            (c, s) for c in (1.5, 2.0) for s in (14.6, 20000.0)}
        assert {s.canvas: (r.scalar(run, s, "height"), r.scalar(run, s, "width")) for s in count} == {
            1.5: (24, 24), 2.0: (32, 32)}


@pytest.fixture(scope="module")
def tiny_single_file(tmp_path_factory):
    """A tiny SDXL folder and the same weights as one original-layout .safetensors, with and
    without the community v-prediction marker keys."""
    from .sdxl_tiny import save_single_file

    root = tmp_path_factory.mktemp("single")
    folder = build_tiny_sdxl(root / "folder", hidden_2=24)  # SDXL's encoders differ in width; diffusers relies on it
    return folder, save_single_file(folder, root / "plain.safetensors"), \
        save_single_file(folder, root / "vpred.safetensors", ("v_pred", "ztsnr"))


def test_a_single_file_checkpoint_samples_exactly_like_its_diffusers_folder(tiny_single_file):
    from nai3eval.checkpoint import load_model
    from nai3train.diffusion import sampling_sigmas
    from nai3train.diffusion.samplers import GuidedDenoiser, get_sampler, initial_state

    folder, plain, vpred = tiny_single_file
    single = load_model(plain, device="cpu", model_config=str(folder))
    assert (single.variant.prediction, single.variant.ztsnr) == ("eps", False)  # the folder's scheduler config
    marked = load_model(vpred, device="cpu", model_config=str(folder))
    assert (marked.variant.prediction, marked.variant.ztsnr) == ("v", True) and "marker keys v_pred, ztsnr" in marked.source
    reference = load_model(folder, device="cpu", prediction="v", ztsnr=True)
    size = reference.bundle.native_size
    prompts = ["red circle, black background", "blue square, white background"]
    eps = torch.randn((2, *reference.sample_shape), generator=torch.Generator().manual_seed(3))
    outs = []
    for ck in (marked, reference):
        cond, uncond = ck.bundle.encode(prompts, [size] * 2), ck.bundle.uncond(2, [size] * 2)
        sig = sampling_sigmas(ck.denoiser.schedule, 4, 20000.0, "native")
        outs.append(get_sampler("euler")(GuidedDenoiser(ck.denoiser, cond, uncond, 5.0),
                                         initial_state(eps, float(sig[0])), sig))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_a_single_file_checkpoint_without_its_config_folder_is_refused(tiny_single_file, tmp_path, capsys):
    from flows.cli import main as nai3

    _, plain, _ = tiny_single_file
    assert nai3(["eval", str(plain), "--work-dir", str(tmp_path), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    err = capsys.readouterr().err
    assert "--model-config DIR" in err and "Hub" in err
    assert nai3(["eval", str(plain), "--model-config", str(tmp_path), "--work-dir", str(tmp_path),
                 "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    assert "model_index.json is missing" in capsys.readouterr().err
