"""RGB-D data: the synthetic room generator and loaders for NYU-style test data (see `load`)."""
from .loaders import Dataset, batches, detect_format, load

__all__ = ["Dataset", "batches", "detect_format", "load"]
