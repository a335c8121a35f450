"""THE diffusion math of nai3, shared by training (nai3train) and sampling (nai3eval).

The resolver ``parameterization(name_or_obj)`` is deliberately not re-exported here: the name would
shadow the ``nai3train.diffusion.parameterization`` submodule; import it from there.
"""
from .parameterization import (PARAMETERIZATIONS, PREDICTIONS, Denoiser, EpsPrediction, Parameterization, VPrediction,
                               X0Prediction, noise_sample, snr, training_target)
from .schedules import (D_REF, PRACTICAL_INFINITY, SDXL_SIGMA_MAX, SPACINGS, Schedule, dimension_scale, karras_sigmas,
                        native_sigmas, sampling_sigmas)
from .weighting import MinSNRWeighting, min_snr_weight
from .loss import DiffusionLoss, LossOutput, TableSigmaSampler

__all__ = ["PREDICTIONS", "Denoiser", "noise_sample", "snr", "training_target", "D_REF", "PRACTICAL_INFINITY",
           "SDXL_SIGMA_MAX", "SPACINGS", "Schedule", "dimension_scale", "karras_sigmas", "native_sigmas", "sampling_sigmas",
           "MinSNRWeighting", "min_snr_weight",
           "PARAMETERIZATIONS", "Parameterization", "EpsPrediction", "VPrediction", "X0Prediction",
           "DiffusionLoss", "LossOutput", "TableSigmaSampler"]
