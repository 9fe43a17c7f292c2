"""Input / output: model checkpoints (`checkpoint`)."""
from . import checkpoint
from .checkpoint import load as load_checkpoint, save as save_checkpoint
