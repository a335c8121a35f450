"""Training data: the embedded benchmark, image folders with tags, and the tag vocabulary."""
from .folder import DatasetError, FolderDataset, load_folder
from .prepare import prepare_dataset
from .synth import synthesize
from .tags import PAD, Vocabulary

__all__ = ["DatasetError", "FolderDataset", "load_folder", "prepare_dataset", "synthesize", "PAD", "Vocabulary"]
