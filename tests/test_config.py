"""Configs are validated before any work, overrides apply, variant hashes are stable."""
import json
import math
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nai3train.config import (AblationConfig, ConfigError, DataConfig, EvalConfig, ModelConfig, TrainConfig,
                              VariantConfig, from_dict, load_config, to_dict)
from nai3train.diffusion import PREDICTIONS, SPACINGS
from nai3train.diffusion.samplers import SAMPLERS

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def test_smoke_config_loads_and_overrides_apply():
    cfg = load_config(SMOKE, ["train.steps=7", "eval.cfg_scales=[1, 3.5]", "variants.nai-v-ztsnr.min_snr_gamma=5"])
    assert cfg.train.steps == 7 and cfg.eval.cfg_scales == (1.0, 3.5)
    v = {x.name: x for x in cfg.variants}
    assert v["nai-v-ztsnr"].min_snr_gamma == 5.0 and math.isinf(v["nai-v-ztsnr"].top_sigma)
    assert v["sdxl-eps"].top_sigma == pytest.approx(14.6146, rel=1e-4)


@pytest.mark.parametrize("override,fragment", [
    ("train.steps=0", "train.steps"),
    ("train.stepz=3", "unknown key"),
    ("train.lr=fast", "train.lr"),
    ("data.kind=web", "data.kind"),
    ("eval.sampler=heun", "eval.sampler"),
    ("variants.sdxl-eps.prediction=flow", "prediction"),
    ("variants.sdxl-eps.sigma_max=inf", "only with ztsnr"),
    ("data.resolution=17", "data.resolution"),
])
def test_bad_values_are_refused_with_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(SMOKE, [override])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_variant_hash_stable_and_sensitive():
    a = VariantConfig(name="a", prediction="v", ztsnr=True)
    b = VariantConfig(name="renamed", prediction="v", ztsnr=True)
    c = VariantConfig(name="a", prediction="v", ztsnr=True, min_snr_gamma=5.0)
    assert a.config_hash() == b.config_hash() != c.config_hash()
    # a literal: the hash must not change across runs, machines or Python versions
    import hashlib
    import json
    canon = json.dumps({"dimension_scale": True, "min_snr_gamma": None, "prediction": "v", "sigma_max": None,
                        "ztsnr": True}, sort_keys=True)
    assert a.config_hash() == hashlib.sha256(canon.encode()).hexdigest()[:12]


def test_paper_and_factorial_matrices():
    root = SMOKE.parent
    paper = load_config(root / "paper.yaml")
    assert {v.name for v in paper.variants} == {"sdxl-eps", "v", "v-ztsnr", "eps-ztsnr"}  # the primaries' arms
    weekly = load_config(root / "weekly.yaml")
    names = {v.name: v for v in weekly.variants}
    assert names["v-ztsnr-tagw"].tag_weighting and names["v-smax20000"].sigma_max == 20000
    assert len(weekly.eval.cfg_scales) >= 5  # C5's fitted optimum
    # the weekly's SDXL ε and v + ZTSNR arms are the nightly's trained seeds: same experiment, same recipe
    from flows.runs import recipe_key

    assert weekly.experiment == paper.experiment
    for name in ("sdxl-eps", "v-ztsnr"):
        arm = {v.name: v for v in paper.variants}[name]
        assert recipe_key(weekly, names[name], "d") == recipe_key(paper, arm, "d")
    assert recipe_key(weekly, names["v-ztsnr-tagw"], "d") != recipe_key(paper, names["v-ztsnr"], "d")
    fac = load_config(root / "factorial.yaml")
    # 2 predictions × 3 σ_max × 2 ZTSNR × 2 tag weighting = 24; refused: ∞ without ZTSNR (4), 14.6 clamp on ZTSNR (4)
    assert len(fac.variants) == 16 and len(fac.skipped_variants) == 8
    assert all("only with ztsnr" in s or "second-highest" in s for s in fac.skipped_variants)
    assert len({v.config_hash() for v in fac.variants}) == 16
    assert len({v.name for v in fac.variants}) == 16


def test_factorial_hashes_are_stable_literals():
    """Names and hashes must not change across runs and machines: pinned to values computed from the
    canonical JSON by hand below, not by the code under test."""
    import hashlib
    import json

    fac = load_config(SMOKE.parent / "factorial.yaml")
    v = next(x for x in fac.variants if x.name == "v-smaxinf-ztsnr-tagw")
    canon = {"dimension_scale": True, "min_snr_gamma": None, "prediction": "v", "sigma_max": "inf", "ztsnr": True,
             "tag_weighting": True}
    assert v.config_hash() == hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:12]


def test_factorial_refuses_unknown_axes(tmp_path):
    bad = tmp_path / "f.yaml"
    bad.write_text("factorial: {prediction: [v], colour: [red]}\n")
    with pytest.raises(ConfigError, match="unknown axes"):
        load_config(bad)


_SMOKE_VARIANTS = {"sdxl-eps": 0, "nai-v-ztsnr": 1}  # their positions in smoke.yaml
_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}
_KEYS = ([*AblationConfig.model_fields]
         + [f"{section}.{f}" for section, model in _SECTIONS.items() for f in model.model_fields]
         + [f"variants.{name}.{f}" for name in _SMOKE_VARIANTS for f in VariantConfig.model_fields])
_WORDS = ["eps", "v", "x0", "flow", "euler", "euler_a", "karras", "native", "folder", "sdxl", "tiny", "inf", ".inf",
          "∞", "-inf", "nan", "null", "true", "yes", "0x10", "1e3", "1_000", "2024-01-01", "[1, 2]", "{a: 1}", "[",
          "/tmp"]
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.sampled_from(_WORDS)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=4) | st.sampled_from(["name", "steps", "kind"]), inner,
                                         max_size=3), max_leaves=6)
_raw = (_values.map(lambda v: yaml.safe_dump(v, default_flow_style=True, allow_unicode=True))
        | st.sampled_from(_WORDS) | st.text(max_size=12))


def _locations(key: str) -> set[str]:
    """Where an error about ``key`` may be reported: the key itself, or a variant's position."""
    parts = key.split(".")
    if parts[0] == "variants" and len(parts) == 3:
        return {key, f"variants[{_SMOKE_VARIANTS[parts[1]]}].{parts[2]}"}
    return {key}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_KEYS), _raw), min_size=1, max_size=3))
def test_random_overrides_give_a_config_or_a_config_error_naming_the_key(overrides):
    assignments = [f"{k}={v}" for k, v in overrides]
    try:
        cfg = load_config(SMOKE, assignments)
    except ConfigError as e:
        wanted = set().union(*(_locations(k) for k, _ in overrides))
        assert any(w in str(e) for w in wanted), (assignments, str(e))
    else:
        assert isinstance(cfg, AblationConfig)


def test_choices_are_the_registries():
    def choices(model, name):
        return set(typing.get_args(model.model_fields[name].annotation))

    assert choices(EvalConfig, "sampler") == set(SAMPLERS)
    assert choices(EvalConfig, "schedule") == set(SPACINGS)
    assert choices(VariantConfig, "prediction") == set(PREDICTIONS)


@pytest.mark.parametrize("name", ["smoke.yaml", "paper.yaml", "weekly.yaml", "factorial.yaml"])
def test_json_round_trip(name):
    """Configs travel as JSON (checkpoint metadata, Prefect parameters): infinities as the string 'inf'."""
    cfg = load_config(SMOKE.parent / name)
    text = json.dumps(to_dict(cfg))
    assert "Infinity" not in text
    back = AblationConfig.model_validate(json.loads(text))
    assert back == cfg and back.skipped_variants == cfg.skipped_variants
    assert json.loads(cfg.model_dump_json()) == to_dict(cfg)
    assert [v.config_hash() for v in back.variants] == [v.config_hash() for v in cfg.variants]


def test_json_round_trip_keeps_infinities():
    cfg = load_config(SMOKE, ["eval.first_sigmas=[14.6, .inf]", "variants.nai-v-ztsnr.sigma_max=infinity"])
    back = AblationConfig.model_validate(json.loads(json.dumps(to_dict(cfg))))
    assert back == cfg and math.isinf(back.eval.first_sigmas[1]) and math.isinf(back.variants[1].sigma_max)


@pytest.mark.parametrize("value", ["inf", ".inf", "+inf", "infinity", "∞", "INF"])
def test_infinity_spellings(value):
    cfg = load_config(SMOKE, [f"eval.first_sigmas=[{value!r}]"])
    assert cfg.eval.first_sigmas == (math.inf,)


@pytest.mark.parametrize("override,fragment", [
    ("train.steps=true", "train.steps: expected an integer"),
    ("train.steps=2.0", "train.steps: expected an integer"),
    ("train.lr='0.1'", "train.lr: expected a number"),
    ("variants.nai-v-ztsnr.ztsnr=1", "variants[1].ztsnr: expected true/false"),
    ("eval.cfg_scales=[1, x]", "eval.cfg_scales[1]: expected a number"),
    ("variants.sdxl-eps.name=nai-v-ztsnr", "variants[1].name: names must be unique"),
    ("variants.sdxl-eps.stepz=1", "variants[0].stepz: unknown key"),
    ("model={kind: tiny, colour: red}", "model.colour: unknown key"),
])
def test_strict_types_and_locations(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        load_config(SMOKE, [override])


def test_from_dict_rebuilds_a_variant_from_checkpoint_metadata():
    v = VariantConfig(name="v", prediction="v", ztsnr=True, sigma_max=math.inf)
    assert from_dict(VariantConfig, to_dict(v), "variant") == v
    with pytest.raises(ConfigError, match=r"variant\.prediction"):
        from_dict(VariantConfig, {**to_dict(v), "prediction": "flow"}, "variant")


def test_cli_exit_code_names_the_key(capsys, tmp_path, monkeypatch):
    from flows.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["ablation", str(SMOKE), "--set", "train.steps=0", "--work-dir", str(tmp_path / "w")]) == 2
    assert "config error at train.steps" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
    # a missing data folder or weight file: one line naming it, before Prefect or MLflow start
    for override, key in (("data.path=/no/such/images", "data.path"), ("eval.clip_path=/no/clip", "eval.clip_path"),
                          ("eval.inception_weights=/no/w.pth", "eval.inception_weights")):
        extra = ["--set", "data.kind=folder"] if key == "data.path" else []
        assert main(["ablation", "smoke", *extra, "--set", override, "--work-dir", str(tmp_path / "w")]) == 2
        err = capsys.readouterr().err
        assert f"config error at {key}" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "w").exists() and not (tmp_path / "mlflow").exists()


def test_shipped_configs_are_found_from_any_directory_and_user_paths_from_the_current_one(tmp_path, monkeypatch):
    """`nai3 … smoke` / `configs/smoke.yaml` outside the repository read the shipped file; a file of
    that name in the current directory wins; a name that is neither is one error listing the shipped."""
    from nai3train.config.locate import locate

    monkeypatch.chdir(tmp_path)
    shipped = locate("configs/smoke.yaml")
    assert shipped.is_file() and locate("smoke") == shipped == locate("smoke.yaml")
    named = load_config("smoke", ["eval.prompt_file=configs/prompts/sdxl_default.txt"]).eval.prompt_file
    assert named == "configs/prompts/sdxl_default.txt" and locate(named).is_file()  # kept portable, found here
    with pytest.raises(ConfigError, match="eval.prompt_file"):
        load_config("smoke", ["eval.prompt_file=configs/prompts/nope.txt"])
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "smoke.yaml").write_text(shipped.read_text().replace("name: smoke", "name: mine"))
    assert load_config("configs/smoke.yaml").name == "mine"
    with pytest.raises(ConfigError, match="shipped: .*smoke.yaml"):
        load_config("nope.yaml")
