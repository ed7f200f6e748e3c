"""The one error type of the checkpoint layer."""
from __future__ import annotations


class CheckpointError(ValueError):
    """A model file that cannot be used as it is; the message names the file and the fix."""


# ComfyUI shows an error's type as module.name: a short, readable type instead of the pack's path.
CheckpointError.__module__ = "xportrait"
