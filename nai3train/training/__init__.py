"""The training loop's named, swappable parts (EDM2's ``training_loop.py`` is the model).

The loop in ``nai3train.trainer`` only wires these together: a learning-rate function of the
step, the weight EMA, the per-σ-bin loss monitor, and the checkpoint state that makes a killed
run resume bit-identically. The loss itself lives with the diffusion maths
(``nai3train.diffusion.DiffusionLoss``).
"""
from .ema import EMA
from .lr import linear_warmup
from .sigma_bins import SIGMA_BINS, SigmaBinLoss, sigma_bin_labels
from .state import TrainingState

__all__ = ["EMA", "linear_warmup", "SIGMA_BINS", "SigmaBinLoss", "sigma_bin_labels", "TrainingState"]
