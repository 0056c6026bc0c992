"""Model weights: registry of official files, checksummed downloads, loaders, UMCI checkpoints."""
from .registry import SAM_CHECKPOINTS, WeightsFile, cache_dir

__all__ = ["SAM_CHECKPOINTS", "WeightsFile", "cache_dir"]
