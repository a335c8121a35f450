"""Networks: the tiny CPU model (SDXL loading comes with the trainer issue)."""
from .tiny import TinyTagUNet

__all__ = ["TinyTagUNet"]
