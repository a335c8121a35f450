"""Every number unchanged: evaluate the same stored checkpoints with the code of two revisions and
compare every measurement and every claim's D_k, interval and verdict.

    .venv/bin/python bench/same_numbers.py BEFORE_REV --work-dir runs-compare [--set train.seeds=[0,1]]

The work folder must hold the trained checkpoints of the config (an ``nai3 ablation`` run with the
same config and work folder trains them). Each side runs in a fresh process, seeded the same way,
over ``git worktree`` checkouts; the last line says how many numbers were compared and the largest
difference. It reads results through the measurement record (``nai3eval.record``) and, for a
revision before it, through the typed results that record replaced.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_PER_IMAGE = {"scorer_recall_rare": "scorer_image_recall_rare",
                 "scorer_leakage_common": "scorer_image_leakage_common"}


def _sigma(s: float) -> str:
    return "inf" if math.isinf(s) else f"{s:g}"


def _legacy(results) -> dict:
    """The typed results before the record, flattened to the record's names."""
    import dataclasses

    out = {}
    for r in results:
        pre = f"{r.seed}|{r.variant}|"
        for p in r.points:
            for f in dataclasses.fields(p):
                v = getattr(p, f.name)
                if f.name not in ("variant", "point", "n_images", "extrapolated", "per_image") and v is not None:
                    out[pre + f"{p.name}|{f.name}"] = float(v)
            for f in dataclasses.fields(p.per_image):
                v = getattr(p.per_image, f.name)
                if v:
                    out[pre + f"{p.name}|{OLD_PER_IMAGE.get(f.name, f.name)}"] = v
        pr = r.probes
        for x0 in (pr.x0_inf, pr.x0_20000):
            name = f"x0-sigma{_sigma(x0.sigma)}"
            out.update({pre + f"{name}|nonfinite_frac": x0.nonfinite_frac, pre + f"{name}|max_abs": x0.max_abs,
                        pre + f"{name}|brightness_err_mean": x0.brightness_err,
                        pre + f"{name}|brightness_err": x0.per_image_err})
        tail = lambda c: f"cfg{c:g}-sigma{{}}-{r.points[0].point.sampler}{r.points[0].point.steps}"  # noqa: E731
        for probe in pr.mean_leak.values():
            name = "mean_leak-" + tail(probe.cfg_scale).format(_sigma(probe.start))
            out[pre + f"{name}|out_mean"] = probe.out_mean
            out[pre + f"{name}|noise_mean"] = probe.noise_mean.tolist()
        if pr.practical_infinity:
            pi = pr.practical_infinity
            if pi.per_image_reference:
                out[pre + "practical_infinity-" + tail(pi.cfg_scale).format(_sigma(pi.reference_start))
                    + "|same_prompt_distance"] = pi.per_image_reference
            for k, d in pi.per_image_distance.items():
                out[pre + "practical_infinity-" + tail(pi.cfg_scale).format(k) + "|distance"] = d
        for probe in [pr.count, *pr.count_scales.values()] if pr.count else []:
            for k, w in probe.wrong.items():
                out[pre + "count-" + tail(probe.cfg_scale).format(k) + f"-x{probe.scale:g}|wrong_count"] = w
    return out


def _record(record) -> dict:
    out = {}
    for (key, s, m), v in record.values.items():
        out[f"{key[1]}|{key[0]}|{s.name}|{m}"] = v.values if hasattr(v, "values") else v
    return out


def dump(args: argparse.Namespace) -> None:
    """One side: evaluate every (seed, variant) checkpoint and decide the claims; write the numbers."""
    import torch

    from flows import pipeline, runs
    from nai3train.config import load_config

    torch.manual_seed(0)  # KID's subsets draw from the global generator: both sides start alike
    cfg = load_config(args.config, args.set)
    ws = pipeline.Workspace(Path(args.work_dir).resolve(), "", "")
    data = pipeline.prepare_data(cfg, ws)
    tagger = pipeline.prepare_tagger(cfg, data, ws)
    inst = pipeline.instruments(cfg, data, tagger)
    try:
        from nai3eval.results import VariantResult  # noqa: F401 (a revision before the record)
        legacy = True
    except ImportError:
        legacy = False
    from nai3eval.evaluate import evaluate_variant
    try:
        from nai3eval.checkpoint import load_model
    except ImportError:
        from nai3eval.sweep import load_model
    results = []
    for seed in cfg.replicate_seeds:
        ck_cfg = cfg.for_seed(seed)
        for v in cfg.variants:
            folder = ws.work / "variants" / f"{v.name}-{runs.run_key(ck_cfg, v, data.content_hash)}" / "checkpoint"
            ck = load_model(folder, device="cpu")
            if legacy:
                r = evaluate_variant(ck, cfg.eval, inst, progress=False)
                r.variant, r.seed = v.name, seed
            else:
                r = evaluate_variant(ck, cfg.eval, inst, progress=False, seed=seed)
            results.append(r)
    from nai3eval.claims import evaluate_claims
    if legacy:
        numbers, outcome = _legacy(results), evaluate_claims(results)
    else:
        from nai3eval.record import Record
        record = Record()
        for r in results:
            record.merge(r)
        numbers, outcome = _record(record), evaluate_claims(record)
    claims = {c["id"]: {k: c[k] for k in ("verdict", "effect", "per_seed")} for c in outcome.to_dict()["claims"]}
    checks = {c["id"]: c["verdict"] for c in outcome.to_dict()["checks"]}
    Path(args.dump).write_text(json.dumps({"numbers": {k: v for k, v in numbers.items() if not k.endswith("|seconds")},
                                           "claims": claims, "checks": checks}, default=str))


def _flat(v) -> list:
    return [x for item in v for x in _flat(item)] if isinstance(v, list) else [v]


def _diff(a, b) -> float:
    """Largest absolute difference; inf where they differ in kind or NaN-ness."""
    fa, fb = _flat(a), _flat(b)
    if len(fa) != len(fb):
        return math.inf
    worst = 0.0
    for x, y in zip(fa, fb):
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            if math.isnan(x) or math.isnan(y):
                worst = max(worst, 0.0 if math.isnan(x) and math.isnan(y) else math.inf)
            elif x != y:
                worst = max(worst, abs(x - y) if math.isfinite(x - y) else math.inf)
        elif x != y:
            worst = math.inf
    return worst


def compare(before: dict, after: dict) -> int:
    nb, na = before["numbers"], after["numbers"]
    shared = sorted(set(nb) & set(na))
    worst = {k: _diff(nb[k], na[k]) for k in shared}
    bad = [k for k, d in worst.items() if d > 1e-9]
    values = sum(len(_flat(nb[k])) for k in shared)
    print(f"measurements: {len(shared)} keys ({values} numbers) in both; only before: {len(set(nb) - set(na))} "
          f"{sorted(set(nb) - set(na))[:6]}; only after: {len(set(na) - set(nb))} {sorted(set(na) - set(nb))[:6]}")
    for k in bad[:20]:
        print(f"  DIFFERS {k}: {worst[k]:.3g}")
    claim_bad = [c for c in before["claims"] if json.dumps(before["claims"][c], sort_keys=True) !=
                 json.dumps(after["claims"].get(c), sort_keys=True)]
    check_bad = [c for c in before["checks"] if before["checks"][c] != after["checks"].get(c)]
    for c in claim_bad + check_bad:
        print(f"  CLAIM DIFFERS {c}: {before['claims'].get(c) or before['checks'][c]} → "
              f"{after['claims'].get(c) or after['checks'].get(c)}")
    for c, x in sorted(after["claims"].items()):
        print(f"  {c:<11} {x['verdict']:>30}  {x['effect']}  per seed {[d['value'] for d in x['per_seed']]}")
    biggest = max(worst.values(), default=0.0)
    print(f"{len(shared)} measurements and {len(before['claims'])} claims + {len(before['checks'])} checks compared: "
          f"{len(bad)} measurements and {len(claim_bad) + len(check_bad)} decisions differ; largest difference "
          f"{biggest:.3g} (target: 0 differ)")
    return 1 if bad or claim_bad or check_bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", nargs="?", help="git revision to compare with (e.g. HEAD~3)")
    ap.add_argument("--config", default=str(ROOT / "configs" / "smoke.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--work-dir", required=True, help="the folder an ablation with this config trained into")
    ap.add_argument("--dump", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--after", default=None, help="compare with this revision instead of the working tree")
    a = ap.parse_args()
    if a.dump:
        dump(a)
        return 0
    resolve = lambda rev: rev and subprocess.run(["git", "-C", str(ROOT), "rev-parse", rev], check=True,  # noqa: E731
                                                 capture_output=True, text=True).stdout.strip()
    revisions = (("before", resolve(a.before)), ("after", resolve(a.after)))  # fixed now: HEAD may move meanwhile
    with tempfile.TemporaryDirectory() as tmp:
        sides = {}
        for label, rev in revisions:
            root = ROOT
            if rev:
                root = Path(tmp) / label
                subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(root), rev], check=True,
                               capture_output=True)
            out = Path(tmp) / f"{label}.json"
            env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
            cmd = [sys.executable, str(ROOT / "bench" / "same_numbers.py"), "--dump", str(out), "--config", a.config,
                   "--work-dir", a.work_dir, *(x for s in a.set for x in ("--set", s))]
            print(f"{label}: {rev or 'working tree'} ({root})", flush=True)
            subprocess.run(cmd, check=True, env=env, cwd=root)
            sides[label] = json.loads(out.read_text())
            if rev:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(root)], check=False)
        return compare(sides["before"], sides["after"])


if __name__ == "__main__":
    sys.exit(main())
