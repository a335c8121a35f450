"""The training loop's parts, each against a hand-written reference: EMA, warm-up, σ bins, the
loss object (target, Min-SNR weight, random-draw order) and the resume state round trip."""
import json
import math

import pytest
import torch

from nai3train.diffusion import (PARAMETERIZATIONS, PREDICTIONS, Denoiser, DiffusionLoss, EpsPrediction,
                                 MinSNRWeighting, Schedule, TableSigmaSampler, VPrediction, X0Prediction, min_snr_weight,
                                 noise_sample, training_target)
from nai3train.diffusion.parameterization import parameterization
from nai3train.training import EMA, SigmaBinLoss, TrainingState, linear_warmup, sigma_bin_labels


@pytest.fixture(autouse=True)
def _keep_global_rng():
    """TrainingState.load sets torch's global RNG; give other tests theirs back."""
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)


class Tiny(torch.nn.Module):
    """F(x_in, c_noise, cond) = W·x_in + b over the last dim; c_noise and cond are ignored."""

    def __init__(self, dim: int = 4):
        super().__init__()
        self.lin = torch.nn.Linear(dim, dim)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x_in, c_noise, cond):
        return self.lin(x_in)


# --- parameterisation registry -----------------------------------------------------------------

def test_registry_resolves_names_and_objects_and_names_the_choices():
    assert PREDICTIONS == ("eps", "v", "x0")
    assert [c.name for c in PARAMETERIZATIONS.values()] == list(PREDICTIONS)
    assert parameterization("v", 0.5) == VPrediction(sigma_data=0.5)
    obj = EpsPrediction(0.7)
    assert parameterization(obj) is obj
    with pytest.raises(ValueError, match="eps.*v.*x0"):
        parameterization("flow")
    den = Denoiser(Tiny(), VPrediction(0.5), Schedule.sdxl())
    assert den.prediction == "v" and den.param == VPrediction(0.5) and den.sigma_data == 0.5
    assert Denoiser(Tiny(), "x0", Schedule.sdxl()).param == X0Prediction()
    with pytest.raises(ValueError):
        Denoiser(Tiny(), "flow", Schedule.sdxl())


# --- EMA ---------------------------------------------------------------------------------------

@torch.no_grad()
def _perturb(model: torch.nn.Module) -> None:
    """One "optimiser step": every parameter moved at random, the integer buffer counted up."""
    for p in model.parameters():
        p.add_(torch.randn_like(p))
    model.calls += 1


def test_ema_equals_hand_written_lerp_recurrence():
    torch.manual_seed(0)
    model = Tiny().double()
    ema = EMA(model, decay=0.9)
    want = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(40):
        _perturb(model)
        ema.update(model, step)
        d = min(0.9, (1 + step) / (10 + step))  # warm-up: 0.1, 2/11, …, capped at 0.9 from step 80 on
        for k, v in model.state_dict().items():
            want[k] = d * want[k] + (1 - d) * v if v.is_floating_point() else v.clone()
    assert ema.decay_at(0) == 0.1 and ema.decay_at(1000) == 0.9
    for k in want:
        torch.testing.assert_close(ema.state_dict()[k], want[k], rtol=1e-12, atol=1e-12)
    assert int(ema.state_dict()["calls"]) == 40  # integer buffers are copied, not averaged


def test_ema_in_one_foreach_kernel_per_group_equals_the_per_tensor_loop_bit_for_bit():
    """The grouped ``_foreach_lerp_`` (one kernel per (device, dtype) group) against the loop it
    replaced, one ``lerp_`` per tensor, over a model mixing float32, float64, bf16 and an int buffer."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8).double(), torch.nn.Linear(8, 4).bfloat16())
    model.register_buffer("calls", torch.zeros((), dtype=torch.int64))
    ema = EMA(model, decay=0.95)
    loop = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for step in range(30):
        _perturb(model)
        ema.update(model, step)
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                loop[k].lerp_(v, 1 - ema.decay_at(step))
            else:
                loop[k].copy_(v)
    for k, v in loop.items():
        assert ema.state_dict()[k].dtype == v.dtype and torch.equal(ema.state_dict()[k], v), k


def test_ema_load_state_dict_copies_in_place_and_refuses_other_keys():
    model = Tiny()
    ema = EMA(model, 0.99)
    live = ema.state_dict()["lin.weight"]
    new = {k: torch.full_like(v, 3) for k, v in ema.state_dict().items()}
    ema.load_state_dict(new)
    assert ema.state_dict()["lin.weight"] is live and bool((live == 3).all())
    with pytest.raises(KeyError):
        ema.load_state_dict({"lin.weight": new["lin.weight"]})


# --- learning rate ------------------------------------------------------------------------------

def test_linear_warmup_sequence():
    lr = linear_warmup(1e-3, 4)
    assert [lr(s) for s in range(6)] == pytest.approx([0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3, 1e-3], rel=1e-15)
    assert [linear_warmup(2e-4, 0)(s) for s in range(3)] == [2e-4] * 3  # no warm-up
    assert linear_warmup(2e-4, 1)(0) == 2e-4


# --- σ bins -------------------------------------------------------------------------------------

def test_sigma_bin_loss_bins_including_infinity():
    sigma = torch.tensor([0.05, 0.1, 0.5, 5.0, 50.0, 500.0, 5000.0, math.inf, 0.07, math.inf], dtype=torch.float64)
    assert sigma_bin_labels(sigma) == ["lt0.1", "0.1-1", "0.1-1", "1-10", "10-100", "100-1000", "gt1000", "inf",
                                       "lt0.1", "inf"]
    bins = SigmaBinLoss()
    bins.add(sigma, torch.tensor([1.0, 2.0, 4.0, 3.0, 5.0, 6.0, 7.0, 8.0, 3.0, 10.0]))
    bins.add(torch.tensor([20000.0]), torch.tensor([1.0]))
    assert bins.means() == {"lt0.1": 2.0, "0.1-1": 3.0, "1-10": 3.0, "10-100": 5.0, "100-1000": 6.0, "gt1000": 4.0,
                            "inf": 9.0}
    bins.reset()
    assert bins.means() == {}
    bins.add(torch.tensor([math.inf]), torch.tensor([0.5]))
    assert bins.means() == {"inf": 0.5}


# --- loss object ------------------------------------------------------------------------------

def _fixed(sigmas):
    return lambda n, gen: sigmas[:n]


SIGMAS = torch.tensor([0.03, 1.0, 14.6, 2254.0, math.inf], dtype=torch.float64)


def _hand_loss(net, prediction, x0, eps, sigma):
    """(F − target)² averaged per sample, every step written out for σ_d = 1."""
    rows = []
    for i, s in enumerate(sigma.tolist()):
        if math.isinf(s):
            x, c_in, v = eps[i], 1.0, -x0[i]
        else:
            x, c_in = x0[i] + s * eps[i], 1 / math.sqrt(s * s + 1)
            v = (eps[i] - s * x0[i]) / math.sqrt(s * s + 1)
        f = net.lin(c_in * x)
        target = {"v": v, "eps": eps[i], "x0": x0[i]}[prediction]
        rows.append(float(((f - target) ** 2).mean()))
    return torch.tensor(rows)


def _closed_min_snr(prediction, sigma, gamma):
    out = []
    for s in sigma.tolist():
        if math.isinf(s):  # the documented SNR = 0 choices
            out.append({"x0": 0.0, "eps": 1.0, "v": 1.0}[prediction])
            continue
        snr = 1 / s**2
        out.append({"x0": min(snr, gamma), "eps": min(snr, gamma) / snr, "v": min(snr, gamma) / (snr + 1)}[prediction])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("prediction", ["v", "eps", "x0"])
def test_loss_object_per_sample_mse_and_min_snr_weight_match_hand_computation(prediction):
    torch.manual_seed(0)
    net = Tiny()
    den = Denoiser(net, prediction, Schedule.sdxl(ztsnr=True))
    loss_fn = DiffusionLoss(den, MinSNRWeighting(5.0).bind(den.param), sigma_sampler=_fixed(SIGMAS))
    x0 = torch.randn(5, 2, 4)
    out = loss_fn(x0, {}, torch.Generator().manual_seed(3))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))  # the fixed sampler draws nothing
    assert torch.equal(out.sigma, SIGMAS)
    assert out.per_sample_mse.dtype == torch.float32 and out.per_sample_mse.device.type == "cpu"
    with torch.no_grad():
        want = _hand_loss(net, prediction, x0, eps, SIGMAS)
    torch.testing.assert_close(out.per_sample_mse.detach(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.weight, _closed_min_snr(prediction, SIGMAS, 5.0).float(), rtol=1e-6, atol=0)
    tag_w = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0])
    torch.testing.assert_close(out.loss(tag_w), (out.weight * tag_w * out.per_sample_mse).mean())
    out.loss(tag_w).backward()
    assert net.lin.weight.grad is not None and torch.isfinite(net.lin.weight.grad).all()


def test_min_snr_closed_forms_on_the_whole_table_and_the_name_based_function_agrees():
    sigma = Schedule.sdxl(ztsnr=True).sigmas
    for p in PREDICTIONS:
        want = _closed_min_snr(p, sigma, 5.0)
        torch.testing.assert_close(parameterization(p).min_snr_weight(sigma, 5.0), want, rtol=1e-10, atol=1e-12)
        assert torch.equal(min_snr_weight(p, sigma, 5.0), parameterization(p).min_snr_weight(sigma, 5.0))
    assert torch.equal(MinSNRWeighting(None).bind("v")(sigma), torch.ones_like(sigma))
    assert float(VPrediction().min_snr_weight(torch.tensor([math.inf]), 5.0, v_weight_at_infinity=0.3)) == 0.3


def test_loss_object_reproduces_the_historical_trainer_stream():
    """Same generator, same draws (randint σ index, then randn ε), same numbers as trainer.py's inline loss."""
    torch.manual_seed(1)
    net = Tiny(8)
    den = Denoiser(net, "v", Schedule.sdxl(ztsnr=True, scale=0.1))
    loss_fn = DiffusionLoss(den, MinSNRWeighting(5.0).bind(den.param))
    x0 = torch.randn(16, 3, 8)
    g_new, g_old = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    out = loss_fn(x0, {"tag_ids": torch.zeros(16)}, g_new)
    # trainer.py before the refactor, verbatim apart from names
    sigmas = den.schedule.sigmas
    t = torch.randint(0, len(sigmas), (16,), generator=g_old)
    sigma = sigmas[t]
    eps = torch.randn(x0.shape, generator=g_old)
    x = noise_sample(x0, eps, sigma)
    f = den.raw(x, sigma, {"tag_ids": torch.zeros(16)})
    per_sample = (f - training_target("v", x0, eps, sigma)).pow(2).flatten(1).mean(1).cpu()
    weight = min_snr_weight("v", sigma, 5.0).to(per_sample.dtype)
    assert torch.equal(out.sigma, sigma) and torch.equal(out.per_sample_mse, per_sample)
    assert torch.equal(out.weight, weight)
    assert torch.equal(g_new.get_state(), g_old.get_state())
    # default σ sampler is uniform over the table; no weighting means ones
    assert isinstance(loss_fn.sigma_sampler, TableSigmaSampler)
    plain = DiffusionLoss(den)(x0, {}, torch.Generator().manual_seed(7))
    assert torch.equal(plain.weight, torch.ones(16)) and torch.equal(plain.per_sample_mse, per_sample)


# --- training state -----------------------------------------------------------------------------

def _parts(seed: int, variant_hash="abc", write_model=None):
    torch.manual_seed(seed)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    return TrainingState(model, EMA(model, 0.99), opt, torch.Generator().manual_seed(seed),
                         variant_hash=variant_hash, write_model=write_model)


def _train(st: TrainingState, steps: int, start: int = 0) -> None:
    for step in range(start, start + steps):
        x = torch.randn(8, 4, generator=st.generator)
        loss = (st.model(x, None, {}) - x.flip(1)).pow(2).mean() + 1e-3 * torch.randn(()).abs()
        st.optimizer.zero_grad()
        loss.backward()
        st.optimizer.step()
        st.ema.update(st.model, step)


def test_training_state_round_trip_restores_everything_and_resumes_bit_identically(tmp_path):
    a = _parts(0)
    _train(a, 3)
    a.save(tmp_path, 3, {"note": "x"})
    ref_gen, ref_rng = a.generator.get_state(), torch.get_rng_state()
    _train(a, 2, start=3)  # what the uninterrupted run does next

    b = _parts(1)  # fresh process: other init, other seeds, no moments
    torch.manual_seed(123)
    assert b.load_latest(tmp_path) == 3 and b.step == 3
    assert torch.equal(b.generator.get_state(), ref_gen) and torch.equal(torch.get_rng_state(), ref_rng)
    opt_state = b.optimizer.state_dict()["state"]
    assert len(opt_state) == 2 and all(float(s["step"]) == 3 for s in opt_state.values())
    assert all(float(s["exp_avg_sq"].abs().sum()) > 0 for s in opt_state.values())
    _train(b, 2, start=3)
    for k, v in a.model.state_dict().items():
        assert torch.equal(b.model.state_dict()[k], v), k
        assert torch.equal(b.ema.state_dict()[k], a.ema.state_dict()[k]), k
    for sa, sb in zip(a.optimizer.state_dict()["state"].values(), b.optimizer.state_dict()["state"].values()):
        assert all(torch.equal(sa[n], sb[n]) for n in ("exp_avg", "exp_avg_sq", "step"))
    meta = json.loads((tmp_path / "checkpoints/step-00000003/meta.json").read_text())
    assert meta["variant_hash"] == "abc" and meta["step"] == 3 and meta["note"] == "x"


def test_training_state_refuses_another_variant_and_starts_at_zero_without_checkpoint(tmp_path):
    assert _parts(0).load_latest(tmp_path) == 0
    a = _parts(0)
    _train(a, 1)
    a.save(tmp_path, 1, {})
    with pytest.raises(ValueError, match="refusing to resume a different variant"):
        _parts(0, variant_hash="other").load_latest(tmp_path)


def test_training_state_keeps_newest_and_runs_the_write_model_hook_before_publishing(tmp_path):
    seen = []

    def write_model(folder):
        assert not folder.name.startswith("step-")  # still staged, invisible to latest_step_checkpoint
        seen.append(folder.name)
        (folder / "config.json").write_text("{}")

    st = _parts(0, write_model=write_model)
    _train(st, 1)
    for step in (1, 2, 3, 3):  # saving a step again replaces it
        st.save(tmp_path, step, {}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000002", "step-00000003"] and len(seen) == 4
    assert (tmp_path / "checkpoints/step-00000003/config.json").is_file()
    assert _parts(5).load_latest(tmp_path) == 3


def test_closing_the_feed_waits_for_its_thread():
    """A feed thread left inside torch at interpreter exit aborts the process after a successful run
    (seen under ``accelerate launch``): ``close`` returns only once the thread has ended, even when it
    is blocked on a full queue of an endless batch stream."""
    import itertools
    import threading

    from nai3train.training.feed import Feed, FeedSpec

    class Source:
        def batch(self, idx, gen):
            return torch.randn(len(idx), 2, generator=gen), None

        def cond(self, idx, dropped, time_ids):
            return {}

    def draw(shape, gen, on_host):
        return torch.rand(shape[0], generator=gen, dtype=torch.float64), torch.randn(shape, generator=gen)

    spec = FeedSpec(Source(), None, 0.0, draw, None, noise_on_host=True, pin=False)
    feed = Feed(spec, ((None, [0, 1]) for _ in itertools.count()), torch.Generator().manual_seed(0), prefetch=2)
    next(feed)
    threads = [t for t in threading.enumerate() if t.name == "nai3-feed"]
    assert threads and threads[0].is_alive()
    feed.close()
    assert not any(t.is_alive() for t in threads)
