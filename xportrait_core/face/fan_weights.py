"""The 2D-FAN landmark weights, with a fallback to the network's plain-weights release.

X-Portrait ran face_alignment with the TorchScript archive ``2DFAN4-cd938726ad.zip``, which this
pack reads without running any of its code (`networks.torchscript_archive`). That reader knows the
archive layouts torch has written so far. Should an archive not read (a later TorchScript
serialisation, a damaged or half-synced file), the same network's plain state_dict release,
``2DFAN4-11f355bf06.pth.tar`` (a bare ``FAN(4).state_dict()`` as face_alignment's plain-weights
API loads it), is used instead, read with ``torch.load(weights_only=True)``: from the folder when
it is there, else downloaded and hash-checked when downloads are allowed. Either way it is said
once, with the reason the archive failed.
"""
from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path

import torch

from ..download import DownloadError, Progress, download
from .detector import WEIGHTS, LandmarkDetector, MissingWeightsError, WeightFile, ensure_weights
from .networks.fan2d import FAN2D, load_fan
from .networks.s3fd import load_s3fd

log = logging.getLogger("xportrait")

_ORIGIN = WEIGHTS["fan"].url.rsplit("/", 1)[0]
#: The full digest is the one other projects pin for this file; it begins with the name's prefix
#: (torch.hub's naming rule). The size is about the archive's: the same tensors.
PLAIN_FAN = WeightFile("2DFAN4-11f355bf06.pth.tar", f"{_ORIGIN}/2DFAN4-11f355bf06.pth.tar",
                       "11f355bf0693120222f5955ce3f9dc8fb5763ebb30a47d7906e509490d32e4aa", 96_000_000)

# What a file that is not a readable FAN raises on the way in: the archive reader's own error and
# torch's layout check are ValueErrors; torch.load and zipfile add the rest.
READ_ERRORS = (ValueError, RuntimeError, OSError, EOFError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile)


def load_fan_network(folder: str | os.PathLike, allow_download: bool, progress: Progress | None = None,
                     archive: WeightFile = WEIGHTS["fan"], plain: WeightFile = PLAIN_FAN) -> FAN2D:
    """The 2D-FAN from `folder`: the TorchScript archive when it reads, else the plain release."""
    folder = Path(folder)
    archive_path, plain_path = folder / archive.name, folder / plain.name
    reason = None
    if archive_path.is_file():
        try:
            return load_fan(archive_path)
        except READ_ERRORS as error:
            reason = f"{archive_path.name} could not be read ({type(error).__name__}: {_first_line(error)})"
    if not plain_path.is_file():
        why = reason or f"{archive_path.name} is not there either"
        if not allow_download:
            raise MissingWeightsError(f"{why}; the landmark detector needs {plain.name} instead (automatic "
                                      f"download is off). Download it from {plain.url} into the folder {folder}")
        try:
            download(plain.url, plain_path, plain.sha256, progress)
        except DownloadError as error:
            raise MissingWeightsError(f"{why}; fetching {plain.name} from {plain.url} into {folder} failed: "
                                      f"{error}") from error
    if reason:
        log.warning(f"{reason}; using the plain-weights release {plain.name} of the same network instead")
    try:
        return load_fan(plain_path)
    except READ_ERRORS as error:
        prefix = f"{reason}, and " if reason else ""
        raise ValueError(f"{prefix}{plain_path.name} could not be read either ({type(error).__name__}: "
                         f"{_first_line(error)}); delete the file(s) and let them download again") from None


def load_landmark_detector(folder: str | os.PathLike, device: torch.device | str | None = None,
                           allow_download: bool = False, progress: Progress | None = None,
                           **options) -> LandmarkDetector:
    """S3FD + 2D-FAN from `folder` (both must be present: see `detector.ensure_weights`), with the
    FAN read through `load_fan_network`'s fallback."""
    paths = ensure_weights(folder, allow_download=False)
    fan = load_fan_network(folder, allow_download, progress)
    return LandmarkDetector(fan, load_s3fd(paths["s3fd"]), device, **options)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no detail"
