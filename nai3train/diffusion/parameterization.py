"""ε / v / x0 parameterisations as EDM preconditioning, and the denoiser D(x, σ, cond) → x̂0.

Written as in docs/diffusion.md, "Parameterisations" (σ form, x_σ = x0 + σ·ε):

    D(x_σ, σ) = c_skip(σ)·x_σ + c_out(σ)·F(c_in(σ)·x_σ, c_noise(σ))

    v:   c_skip = σ_d²/(σ²+σ_d²)   c_out = −σ·σ_d/√(σ²+σ_d²)   c_in = 1/√(σ²+σ_d²)
    ε:   c_skip = 1                c_out = −σ                  c_in = 1/√(σ²+σ_d²)
    x0:  c_skip = 0                c_out = 1                   c_in = 1/√(σ²+σ_d²)
    c_noise = t(σ), the (continuous) SDXL timestep, so an SDXL UNet sees the inputs it was built for.

**σ = +∞.** x_σ itself is infinite there, so wherever σ = +∞ the state tensor carries the limit
of x_σ/σ, i.e. the unit noise ε (``noise_sample`` builds it that way, and samplers start from it).
With that convention the limits are exact: c_in·x_σ → ε, c_skip·x_σ → 0, and
D = −σ_d·F (v), D = F (x0), D = σ·(ε − F) (ε: ±∞/NaN, the failure the paper predicts; returned
as the arithmetic gives it, never raised).

One class per parameterisation (EDM's ``VPPrecond``/``EDMPrecond`` are the model): each of
``EpsPrediction``, ``VPrediction``, ``X0Prediction`` owns its c_skip, c_out, training target,
Min-SNR-γ weight (maths in ``weighting.py``'s docstring) and the way D combines the state with F,
σ = ∞ limits included, so a reader with the paper open finds each formula in one place. Configs
name them by string ("eps", "v", "x0"); ``parameterization()`` is the only place a string becomes
a class. The module-level ``c_skip``/``c_out``/``training_target`` functions are thin delegations
kept for callers that still pass the name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Protocol

import torch

from .schedules import Schedule


class Network(Protocol):
    """F: the raw network. ``cond`` is whatever the model needs (tag ids, text embeddings…)."""

    def __call__(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: dict) -> torch.Tensor: ...


def _b(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample σ of shape [B] against an image batch [B, C, H, W]."""
    return sigma.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def noise_sample(x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_σ = x0 + σ·ε, and ε itself where σ = +∞ (the module's convention for the infinite state)."""
    s = _b(sigma, x0)
    inf = torch.isinf(s)
    return torch.where(inf, eps, x0 + torch.where(inf, torch.zeros_like(s), s) * eps)


def _snr_finite(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """σ_d²/σ² written to avoid ∞/∞: exactly 0 at σ = ∞, +∞ at σ = 0 (Min-SNR's input)."""
    inf = torch.isinf(sigma)
    s_fin = torch.where(inf, torch.ones_like(sigma), sigma)
    return torch.where(inf, torch.zeros_like(sigma), sigma_data**2 / s_fin**2)


@dataclass(frozen=True)
class Parameterization:
    """What F predicts, as EDM preconditioning; subclasses give c_skip, c_out, the target, the weight.

    ``sigma_data`` is σ_d, the data's standard deviation the preconditioning assumes (1.0 for
    SDXL latents as the trainer normalises them). Instances are small frozen values: compare and
    hash them, store them in configs' place of the name.
    """

    name: ClassVar[str] = ""
    sigma_data: float = 1.0

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        """1/√(σ²+σ_d²), shared by all three; 1 at σ = ∞, because there the state already holds x_σ/σ."""
        return torch.where(torch.isinf(sigma), torch.ones_like(sigma), (sigma**2 + self.sigma_data**2).rsqrt())

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        """c_skip as applied to the stored state (so its σ = ∞ value multiplies ε, not x_σ)."""
        raise NotImplementedError

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def target(self, x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """What F should output: (x0 − c_skip·x_σ)/c_out, in closed form (exact at σ = ∞)."""
        raise NotImplementedError

    def min_snr_weight(self, sigma: torch.Tensor, gamma: float | None,
                       v_weight_at_infinity: float = 1.0) -> torch.Tensor:
        """Min-SNR-γ loss weight per sample (float64); ``gamma=None`` means no Min-SNR (all ones).

        ``v_weight_at_infinity`` is only read by v (the weight of its pure-noise step); it is
        accepted by all three so a weighting can be bound without knowing the parameterisation.
        """
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        if gamma is None:
            return torch.ones_like(sigma)
        if gamma <= 0:
            raise ValueError(f"min_snr_gamma must be > 0, got {gamma}")
        return self._min_snr(sigma, gamma, v_weight_at_infinity)

    def _min_snr(self, sigma: torch.Tensor, gamma: float, v_weight_at_infinity: float) -> torch.Tensor:
        raise NotImplementedError

    def combine(self, x: torch.Tensor, sigma: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """x̂0 = c_skip·x + c_out·F for a per-sample σ of shape [B]; exact at σ = ∞ for v and x0."""
        skip = _b(self.c_skip(sigma), x)
        out = _b(self.c_out(sigma), x)
        return skip * x + out * f


@dataclass(frozen=True)
class EpsPrediction(Parameterization):
    """ε-prediction (SDXL's native objective): F estimates the noise, D = x_σ − σ·F.

    At σ = ∞ there is no finite x0 to recover: D = σ·(ε − F) is ±∞ (or NaN where F = ε exactly),
    the failure the paper predicts. It is returned as the arithmetic gives it, never raised.
    """

    name: ClassVar[str] = "eps"

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.where(torch.isinf(sigma), sigma, torch.ones_like(sigma))  # σ·(stored ε) = x_σ

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        return -sigma

    def target(self, x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return eps

    def _min_snr(self, sigma: torch.Tensor, gamma: float, v_weight_at_infinity: float) -> torch.Tensor:
        # min(SNR, γ)/SNR = min(1, γ·σ²/σ_d²): 1 at σ = ∞ (the limit, not 0/0).
        return torch.clamp(gamma * sigma**2 / self.sigma_data**2, max=1.0)

    def combine(self, x: torch.Tensor, sigma: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """x − σ·F in finite rows; σ·(ε − F) at ∞ (±∞ or NaN: the predicted failure)."""
        skip = _b(self.c_skip(sigma), x)
        out = _b(self.c_out(sigma), x)
        inf = torch.isinf(_b(sigma, x))
        return torch.where(inf, skip * (x - f), x + out * f)


@dataclass(frozen=True)
class VPrediction(Parameterization):
    """v-prediction (NAI v3): finite D on the whole σ range, D(x, ∞) = −σ_d·F."""

    name: ClassVar[str] = "v"

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        """σ_d²/(σ²+σ_d²); 0 at σ = ∞, where c_skip·x_σ → 0."""
        sd2 = self.sigma_data**2
        return torch.where(torch.isinf(sigma), torch.zeros_like(sigma), sd2 / (sigma**2 + sd2))

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        """−σ·σ_d/√(σ²+σ_d²); −σ_d at σ = ∞."""
        finite = -sigma * self.sigma_data / (sigma**2 + self.sigma_data**2).sqrt()
        return torch.where(torch.isinf(sigma), torch.full_like(sigma, -self.sigma_data), finite)

    def target(self, x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """v = (σ_d²·ε − σ·x0)/(σ_d·√(σ²+σ_d²)); −x0/σ_d at σ = ∞.

        Equal to diffusers' √ᾱ·ε − √(1−ᾱ)·x0 for σ_d = 1 (tests compare against ``get_velocity``).
        """
        sd = self.sigma_data
        s = _b(sigma, x0)
        inf = torch.isinf(s)
        s_fin = torch.where(inf, torch.zeros_like(s), s)
        v = (sd**2 * eps - s_fin * x0) / (sd * (s_fin**2 + sd**2).sqrt())
        return torch.where(inf, -x0 / sd, v)

    def _min_snr(self, sigma: torch.Tensor, gamma: float, v_weight_at_infinity: float) -> torch.Tensor:
        # min(SNR, γ)/(SNR + 1) at finite σ; at σ = ∞ our documented choice, not the formula's 0.
        snr = _snr_finite(sigma, self.sigma_data)
        w = torch.minimum(snr, torch.full_like(snr, gamma)) / (snr + 1)
        w = torch.where(torch.isinf(snr), torch.zeros_like(w), w)  # σ = 0: min(∞,γ)/∞ → 0
        return torch.where(torch.isinf(sigma), torch.full_like(w, v_weight_at_infinity), w)


@dataclass(frozen=True)
class X0Prediction(Parameterization):
    """x0-prediction: F is the clean-image estimate, D = F at every σ (documented, not a product variant)."""

    name: ClassVar[str] = "x0"

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(sigma)

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(sigma)

    def target(self, x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x0

    def _min_snr(self, sigma: torch.Tensor, gamma: float, v_weight_at_infinity: float) -> torch.Tensor:
        # min(SNR, γ): 0 at σ = ∞.
        snr = _snr_finite(sigma, self.sigma_data)
        return torch.minimum(snr, torch.full_like(snr, gamma))


PARAMETERIZATIONS: dict[str, type[Parameterization]] = {"eps": EpsPrediction, "v": VPrediction, "x0": X0Prediction}
PREDICTIONS = tuple(PARAMETERIZATIONS)


def parameterization(name_or_obj: str | Parameterization, sigma_data: float = 1.0) -> Parameterization:
    """The parameterisation a config names; an instance is returned as is (it carries its own σ_d)."""
    if isinstance(name_or_obj, Parameterization):
        return name_or_obj
    cls = PARAMETERIZATIONS.get(name_or_obj) if isinstance(name_or_obj, str) else None
    if cls is None:
        raise ValueError(f"unknown prediction {name_or_obj!r}; choose one of {PREDICTIONS}")
    return cls(sigma_data=sigma_data)


# Name-based functions for existing callers: one-line delegations, no dispatch of their own.

def c_in(sigma: torch.Tensor, sigma_data: float = 1.0) -> torch.Tensor:
    """1/√(σ²+σ_d²); 1 at σ = ∞ (shared by every parameterisation)."""
    return Parameterization(sigma_data).c_in(sigma)


def c_skip(prediction: str | Parameterization, sigma: torch.Tensor, sigma_data: float = 1.0) -> torch.Tensor:
    return parameterization(prediction, sigma_data).c_skip(sigma)


def c_out(prediction: str | Parameterization, sigma: torch.Tensor, sigma_data: float = 1.0) -> torch.Tensor:
    return parameterization(prediction, sigma_data).c_out(sigma)


def training_target(prediction: str | Parameterization, x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor,
                    sigma_data: float = 1.0) -> torch.Tensor:
    """What F should output for ``prediction``; see each class's ``target``."""
    return parameterization(prediction, sigma_data).target(x0, eps, sigma)


@dataclass
class Denoiser:
    """D(x, σ, cond) → x̂0, the one interface training and every sampler share.

    ``sigma`` is in model units, one value per sample (or a scalar, broadcast). ``prediction``
    may be a name or a ``Parameterization``; the resolved object is ``param`` and ``prediction``
    is always its name afterwards (configs, logs and checks read the string).
    """

    network: Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor]
    prediction: str | Parameterization
    schedule: Schedule
    sigma_data: float = 1.0
    param: Parameterization = field(init=False, repr=False)
    _memo: dict = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        param = parameterization(self.prediction, self.sigma_data)
        if param.sigma_data != self.sigma_data:
            if self.sigma_data != 1.0:  # both given explicitly and they disagree: no silent winner
                raise ValueError(f"sigma_data={self.sigma_data} disagrees with {param!r}")
            self.sigma_data = param.sigma_data
        self.param = param
        self.prediction = param.name

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous SDXL timestep t(σ) in float64; the network casts it to its own dtype."""
        return self.schedule.sigma_to_t(sigma)

    def raw(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict) -> torch.Tensor:
        """F(c_in·x, c_noise): the network's output, used for the training loss."""
        sigma = self._per_sample(sigma, x)
        x_in = x * _b(self.param.c_in(sigma), x)
        return self.network(x_in, self.c_noise(sigma), cond)

    def _at(self, sigma: float, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(per-sample σ, c_in broadcast to x, c_noise) for one sampler σ: computed by the same ops
        as ``raw`` the first time (so the same values), then kept — a sampler calls every σ of its
        list once per batch, and these small float64 kernels otherwise cost SDXL sampling ~5 %."""
        key = (sigma, x.device, x.shape[0], x.dtype, x.ndim)
        hit = self._memo.get(key)
        if hit is None:
            if len(self._memo) > 1024:
                self._memo.clear()
            s = self._per_sample(sigma, x)
            hit = self._memo[key] = (s, _b(self.param.c_in(s), x), self.c_noise(s))
        return hit

    def combine(self, x: torch.Tensor, sigma: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """x̂0 = c_skip·x + c_out·F, with the exact σ = ∞ limits of the module docstring."""
        return self.param.combine(x, self._per_sample(sigma, x), f)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: dict) -> torch.Tensor:
        if isinstance(sigma, float):  # a sampler's step: the σ-only factors are computed once
            s, c_in, c_noise = self._at(sigma, x)
            return self.combine(x, s, self.network(x * c_in, c_noise, cond))
        sigma = self._per_sample(sigma, x)
        return self.combine(x, sigma, self.raw(x, sigma, cond))

    @staticmethod
    def _per_sample(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        return sigma


def snr(sigma: torch.Tensor, sigma_data: float = 1.0) -> torch.Tensor:
    """Signal-to-noise ratio σ_d²/σ² (0 at σ = ∞)."""
    return sigma_data**2 / sigma**2
