"""effsam2: fast promptable video object segmentation for the SAM 2 family."""

from effsam2.build import build_model
from effsam2.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    Effsam2Error,
    PromptError,
    UnknownModelError,
    VideoError,
)
from effsam2.predictor.image import ImagePredictor
from effsam2.predictor.mirror import MirrorAveragingPredictor
from effsam2.predictor.stream import StreamTracker
from effsam2.predictor.video import VideoPredictor
from effsam2.registry import get_config, list_models, register_family

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "Effsam2Error",
    "ImagePredictor",
    "MirrorAveragingPredictor",
    "PromptError",
    "StreamTracker",
    "UnknownModelError",
    "VideoError",
    "VideoPredictor",
    "__version__",
    "build_model",
    "get_config",
    "list_models",
    "register_family",
]
