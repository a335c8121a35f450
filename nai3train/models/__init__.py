"""Networks and the model bundles through which training and evaluation reach them."""
from .bundle import BUNDLES, ModelBundle, load_bundle
from .tiny import TinyBundle, TinyTagUNet

__all__ = ["BUNDLES", "ModelBundle", "load_bundle", "TinyBundle", "TinyTagUNet"]
