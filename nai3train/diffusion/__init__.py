"""THE diffusion math of nai3, shared by training (nai3train) and sampling (nai3eval)."""
from .parameterization import PREDICTIONS, Denoiser, noise_sample, snr, training_target
from .schedules import (D_REF, PRACTICAL_INFINITY, SDXL_SIGMA_MAX, Schedule, dimension_scale, karras_sigmas,
                        native_sigmas, sampling_sigmas)
from .weighting import MinSNRWeighting, min_snr_weight

__all__ = ["PREDICTIONS", "Denoiser", "noise_sample", "snr", "training_target", "D_REF", "PRACTICAL_INFINITY",
           "SDXL_SIGMA_MAX", "Schedule", "dimension_scale", "karras_sigmas", "native_sigmas", "sampling_sigmas",
           "MinSNRWeighting", "min_snr_weight"]
