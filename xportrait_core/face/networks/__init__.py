"""The landmark backend's networks: 2D-FAN heatmaps and S3FD face boxes (face_alignment's)."""

from .fan2d import FAN2D, load_fan, read_fan_weights
from .s3fd import S3FD, decode, load_s3fd, prepare_input, suppress
from .torchscript_archive import TorchScriptArchiveError, is_torchscript_archive, read_torchscript_tensors

__all__ = ["FAN2D", "load_fan", "read_fan_weights", "S3FD", "decode", "load_s3fd", "prepare_input", "suppress",
           "TorchScriptArchiveError", "is_torchscript_archive", "read_torchscript_tensors"]
