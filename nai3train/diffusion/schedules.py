"""Noise schedules in σ form (x_σ = x0 + σ·ε), all in one place.

SDXL trains on a 1000-step discrete VP schedule. We express it as a table of σ_t = √((1−ᾱ_t)/ᾱ_t)
(docs/diffusion.md, "Schedules"), optionally rescaled to zero terminal SNR (Lin et al. 2023, Algorithm 1), where
σ_999 = +∞. Every σ a user types (configs, CLI, reports) is in **SDXL units**; the
dimension-equivalent scale (docs/diffusion.md) that maps them to model units for small images is applied
here and nowhere else: ``Schedule.sigmas = scale · sdxl_sigmas``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

NUM_TRAIN_TIMESTEPS = 1000
SDXL_BETA_START = 0.00085
SDXL_BETA_END = 0.012
SDXL_SIGMA_MAX = 14.614641609  # σ_999 of the plain SDXL table
PRACTICAL_INFINITY = 20000.0  # the paper's finite stand-in for σ = ∞
D_REF = 4 * 128 * 128  # SDXL latent dimension at 1024², the reference for dimension scaling


def sdxl_betas(n: int = NUM_TRAIN_TIMESTEPS, beta_start: float = SDXL_BETA_START,
               beta_end: float = SDXL_BETA_END) -> torch.Tensor:
    """SDXL's "scaled linear" betas: √β linear from √β_start to √β_end (float64)."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t = Π_{s≤t} (1 − β_s)."""
    return torch.cumprod(1.0 - betas, dim=0)


def rescale_zero_terminal_snr(alphas_bar: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023, Algorithm 1 on ᾱ: shift and scale √ᾱ so that √ᾱ_T = 0, √ᾱ_0 unchanged.

    Returns the rescaled ᾱ; its last entry is exactly 0 (SNR = 0, σ = +∞).
    """
    sqrt_ab = alphas_bar.sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    return sqrt_ab**2


def sigmas_from_alphas_cumprod(alphas_bar: torch.Tensor) -> torch.Tensor:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t); ᾱ_t = 0 gives +∞ exactly (no NaN)."""
    with torch.no_grad():
        ratio = torch.where(alphas_bar > 0, (1 - alphas_bar) / alphas_bar.clamp_min(1e-300),
                            torch.full_like(alphas_bar, math.inf))
    return ratio.sqrt()


def dimension_scale(dim: int, d_ref: int = D_REF) -> float:
    """√(D / D_ref): the factor that gives a D-dimensional sample the same noise on its mean
    (std σ/√D) as SDXL's latent at the same SDXL-unit σ (docs/diffusion.md, "Dimension equivalence")."""
    if dim <= 0:
        raise ValueError(f"dimension must be positive, got {dim}")
    return math.sqrt(dim / d_ref)


@dataclass(frozen=True)
class Schedule:
    """A 1000-entry σ table (model units) plus t ↔ σ mapping.

    ``sdxl_sigmas`` is the table in SDXL units, ascending in t; its last entry is +∞ with ZTSNR
    unless ``sigma_max`` clamps it. ``scale`` converts SDXL units to model units.
    """

    sdxl_sigmas: torch.Tensor
    scale: float = 1.0
    ztsnr: bool = False

    @classmethod
    def sdxl(cls, ztsnr: bool = False, sigma_max: float | None = None, scale: float = 1.0) -> "Schedule":
        """SDXL's schedule, optionally ZTSNR-rescaled.

        ``sigma_max`` (SDXL units) replaces the top entry σ_999: 20000 clamps ZTSNR's +∞ to the
        paper's practical infinity, or lifts plain SDXL's 14.6 to 20000; None keeps the table's own.
        """
        ab = alphas_cumprod(sdxl_betas())
        if ztsnr:
            ab = rescale_zero_terminal_snr(ab)
        sig = sigmas_from_alphas_cumprod(ab)
        if sigma_max is not None:
            if not sigma_max > float(sig[-2]):
                raise ValueError(
                    f"sigma_max={sigma_max} must exceed the table's second-highest sigma "
                    f"{float(sig[-2]):.4g} (SDXL units): it replaces the top entry only")
            sig = sig.clone()
            sig[-1] = sigma_max
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        return cls(sdxl_sigmas=sig, scale=float(scale), ztsnr=ztsnr)

    @property
    def sigmas(self) -> torch.Tensor:
        """The table in model units (the dimension scale applied)."""
        return self.sdxl_sigmas * self.scale

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def to_model(self, sigma_sdxl: float | torch.Tensor):
        """SDXL units → model units. The only place the dimension scale is applied."""
        return sigma_sdxl * self.scale

    def to_sdxl(self, sigma_model: float | torch.Tensor):
        """Model units → SDXL units, for reports."""
        return sigma_model / self.scale

    def t_to_sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        """Continuous t in [0, 999] → σ (model units), linear interpolation in log σ.

        Between t=998 and t=999 of a ZTSNR table the top end is +∞: there we interpolate towards
        the practical infinity and return +∞ at t = 999 exactly.
        """
        t = torch.as_tensor(t, dtype=torch.float64)
        log_s = self.log_table(t.device)
        t_c = t.clamp(0, NUM_TRAIN_TIMESTEPS - 1)
        lo = t_c.floor().long().clamp(max=NUM_TRAIN_TIMESTEPS - 2)
        w = t_c - lo
        out = torch.exp((1 - w) * log_s[lo] + w * log_s[lo + 1])
        if self._infinite_top:
            out = torch.where(t_c >= NUM_TRAIN_TIMESTEPS - 1, torch.full_like(out, math.inf), out)
        return out * self.scale

    def sigma_to_t(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """σ (model units) → continuous t, inverse of :meth:`t_to_sigma`; σ = +∞ → 999.

        σ above the table's finite top (an extrapolated start, e.g. 20000 on the SDXL table) maps
        to t = 999: the network never saw more noise than that. Reads nothing back from the device
        (the training step calls it every micro-batch).
        """
        sigma = torch.as_tensor(sigma, dtype=torch.float64) / self.scale
        log_s = self.log_table(sigma.device)
        log_sigma = torch.log(sigma.clamp_min(self._sigma_floor))
        idx = torch.searchsorted(log_s, log_sigma.reshape(-1).contiguous()).reshape(log_sigma.shape)
        hi = idx.clamp(1, NUM_TRAIN_TIMESTEPS - 1)
        lo = hi - 1
        w = ((log_sigma - log_s[lo]) / (log_s[hi] - log_s[lo])).clamp(0, 1)
        t = lo.to(torch.float64) + w
        return torch.where(torch.isinf(sigma), torch.full_like(t, NUM_TRAIN_TIMESTEPS - 1), t)

    def log_table(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """log σ of the table (SDXL units; +∞ replaced by the practical infinity), on ``device``:
        copied there once per device and kept, not on every call."""
        device = torch.device(device)
        tables = self._log_tables
        if device not in tables:
            tables[device] = tables[torch.device("cpu")].to(device)
        return tables[device]

    @cached_property
    def _log_tables(self) -> dict[torch.device, torch.Tensor]:
        log_s = self.sdxl_sigmas.log()
        if self._infinite_top:
            log_s = log_s.clone()
            log_s[-1] = max(math.log(PRACTICAL_INFINITY), float(log_s[-2]) + 1e-6)
        return {torch.device("cpu"): log_s}

    @cached_property
    def _infinite_top(self) -> bool:
        return math.isinf(float(self.sdxl_sigmas[-1]))

    @cached_property
    def _sigma_floor(self) -> float:
        return float(self.sdxl_sigmas[0])


def native_sigmas(schedule: Schedule, steps: int, first_sigma: float) -> torch.Tensor:
    """The paper's "native"/"simple" schedule: ``steps`` σ evenly spaced in t over the table,
    starting at ``first_sigma`` (SDXL units; may be +∞), then a final 0. Returns model units.

    The start t is where ``first_sigma`` sits in the table (t=999 if it is at or above the top);
    the first entry is then set to exactly ``first_sigma`` so 20000 or ∞ appear as given.
    """
    _check_steps(steps, first_sigma)
    first = schedule.to_model(float(first_sigma))
    top_finite = float(schedule.sigmas[-1]) if not math.isinf(schedule.sigma_max) else math.inf
    t_start = schedule.sigma_to_t(min(first, top_finite))
    ts = torch.linspace(float(t_start), 0.0, steps, dtype=torch.float64)
    sig = schedule.t_to_sigma(ts)
    sig[0] = first
    return torch.cat([sig, sig.new_zeros(1)])


def karras_sigmas(schedule: Schedule, steps: int, first_sigma: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) ρ-schedule from ``first_sigma`` (SDXL units) down to the table's σ_min,
    then 0. A first σ of +∞ ramps from the practical infinity and keeps +∞ as the first entry."""
    _check_steps(steps, first_sigma)
    first = schedule.to_model(float(first_sigma))
    ramp_top = schedule.to_model(PRACTICAL_INFINITY) if math.isinf(first) else first
    lo, hi = schedule.sigma_min ** (1 / rho), ramp_top ** (1 / rho)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sig = (hi + ramp * (lo - hi)) ** rho
    sig[0] = first
    return torch.cat([sig, sig.new_zeros(1)])


def _check_steps(steps: int, first_sigma: float) -> None:
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    if not first_sigma > 0:
        raise ValueError(f"first sigma must be > 0 (SDXL units), got {first_sigma}")


SPACINGS = {"native": native_sigmas, "karras": karras_sigmas}


def sampling_sigmas(schedule: Schedule, steps: int, first_sigma: float, kind: str = "native") -> torch.Tensor:
    """The σ list of the named spacing (a key of ``SPACINGS``: 'native' or 'karras')."""
    try:
        spacing = SPACINGS[kind]
    except KeyError:
        raise ValueError(f"unknown sigma schedule {kind!r}; choose one of {sorted(SPACINGS)}") from None
    return spacing(schedule, steps, first_sigma)
