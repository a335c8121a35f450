"""Training data: the embedded benchmark, image folders with tags, bucketing, normalisation,
tag statistics and weights."""
from .bucketed import BucketedDataset, default_buckets
from .bucketing import Bucket, BucketBatches, assign_bucket, make_buckets
from .folder import DatasetError, FolderDataset, load_folder, scan_folder
from .normalize import SDXL_LATENT, ChannelStats, channel_stats
from .prepare import PreparedData, prepare_dataset
from .synth import synthesize
from .tag_weights import TagWeighting, tag_frequencies
from .tags import PAD, Vocabulary

__all__ = ["BucketedDataset", "default_buckets", "Bucket", "BucketBatches", "assign_bucket", "make_buckets",
           "DatasetError", "FolderDataset", "load_folder", "scan_folder", "SDXL_LATENT", "ChannelStats",
           "channel_stats", "PreparedData", "prepare_dataset", "synthesize", "TagWeighting", "tag_frequencies", "PAD", "Vocabulary"]
