"""Exceptions raised by effsam2.

Every error a user can cause (bad file, bad prompt, wrong checkpoint) is an ``Effsam2Error`` with a
one-line message naming the problem; the CLI prints that line and exits with code 2.
"""


class Effsam2Error(Exception):
    """Base class of all user-facing effsam2 errors."""


class UnknownModelError(Effsam2Error, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(Effsam2Error, ValueError):
    """A model setting that the model cannot take (e.g. an image size that is not a multiple of its stride).

    Also a ``ValueError``, which is what ``ModelConfig.with_image_size`` raised before this class existed.
    """


class CheckpointError(Effsam2Error):
    """A checkpoint that is missing, corrupt, or made for another model."""


class VideoError(Effsam2Error):
    """A video source that is missing, unreadable, empty or inconsistent."""


class PromptError(Effsam2Error, ValueError):
    """A prompt that cannot be applied (outside the frame, bad frame index, bad shape)."""


class DatasetError(Effsam2Error):
    """A dataset folder or annotation file that is missing or unreadable."""
