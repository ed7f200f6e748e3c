"""The one error type of the checkpoint layer."""
from __future__ import annotations


class CheckpointError(ValueError):
    """A model file that cannot be used as it is; the message names the file and the fix."""
