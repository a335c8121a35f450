"""nai3train: everything up to a trained checkpoint (diffusion math, data, models, the loop)."""
__version__ = "0.1.0"
