"""The loaders' `download` choice: fetch the official checkpoint into models/xportrait from the graph.

Only files with a known source (xportrait_core.download.KNOWN_FILES, today the official
model_state-415001.th) are ever fetched, only when a loader's `download` is on and the file is in
none of the folders registered under `xportrait`, and only into the first of those folders
(ComfyUI/models/xportrait unless extra_model_paths.yaml says otherwise). The transfer resumes a
`.part` file left by an earlier attempt, checks size and sha256, and only then renames the file
to its final name. Progress shows on the node through comfy.utils.ProgressBar; Cancel stops the
transfer and keeps the partial file for the next run.

One download runs at a time in this process. ComfyUI runs the loaders of a prompt one after the
other, so when six loaders name the missing file the first fetches it and the others find it
under the lock and simply load it.
"""
from __future__ import annotations

import logging
import os
import threading

import comfy.model_management as mm
import comfy.utils
import folder_paths

from ..xportrait_core import download as downloads
from . import model_files

log = logging.getLogger("xportrait")
_download_lock = threading.Lock()

DOWNLOAD_TOOLTIP = (f"Off: use the file in models/xportrait as it is. On: if {model_files.OFFICIAL_FILE} is missing, "
                    "download it there first (12.3 GB from Hugging Face; resumable, size and sha256 checked; the "
                    "progress bar shows on this node). Off by default so the large download is always your choice. "
                    "Any file that is already there is never fetched again.")


def target_folder() -> str:
    """Where downloads go: the first folder ComfyUI has registered for `xportrait`."""
    return folder_paths.get_folder_paths(model_files.FOLDER)[0]


def loader_choices() -> list[str]:
    """The model-file list of the loaders: the files present, plus the official file's name even
    when it is absent, so a shared workflow validates and its loaders can fetch it."""
    return sorted(set(model_files.model_files()) | {model_files.OFFICIAL_FILE})


def ensure_present(name: str, allow_download: bool) -> None:
    """Make sure `name` can be opened: present already, or fetched now when allowed and known.

    A missing file without a known source is left to model_files.resolve, which names the folders.
    """
    if _present(name):
        return
    source = downloads.source_of(name)
    if source is None:
        return
    folder = target_folder()
    if not allow_download:
        raise FileNotFoundError(_missing_message(name, source, folder))
    with _download_lock:
        if _present(name):  # fetched by an earlier loader while this one waited
            return
        _fetch(name, source, folder)


def _present(name: str) -> bool:
    return folder_paths.get_full_path(model_files.FOLDER, name) is not None


def _fetch(name: str, source: downloads.KnownFile, folder: str) -> None:
    log.info("X-Portrait: downloading %s (%.1f GB) from %s into %s", name, source.approx_bytes / 1e9, source.url,
             folder)
    fetch_bar, check_bar = _NodeBar(source.approx_bytes), _NodeBar(source.approx_bytes)
    try:
        downloads.download(source.url, os.path.join(folder, name), source.sha256, fetch_bar.update,
                           size=source.size, verify_progress=check_bar.update)
    except downloads.OfflineError as error:
        # One message that says what to do; the URL and the folder are in the downloader's text.
        raise downloads.OfflineError(f"{error}. Or run this loader again with `download` on once the "
                                     "connection is back; it resumes where it stopped.") from None
    log.info("X-Portrait: %s downloaded and verified", name)


class _NodeBar:
    """A ComfyUI progress bar on the running node, made on the first byte; the Cancel button
    interrupts between chunks (the partial file stays for the next run)."""

    def __init__(self, fallback_total: int):
        self.fallback_total, self.bar = fallback_total, None

    def update(self, done: int, total: int | None) -> None:
        mm.throw_exception_if_processing_interrupted()
        total = total or self.fallback_total
        if self.bar is None:
            self.bar = comfy.utils.ProgressBar(total)
        self.bar.update_absolute(min(done, total), total)


def _missing_message(name: str, source: downloads.KnownFile, folder: str) -> str:
    partial = os.path.join(folder, name + ".part")
    resume = (f" A partial download ({os.path.getsize(partial) / 1e9:.2f} GB) is there already and will be resumed."
              if os.path.isfile(partial) else "")
    searched = ", ".join(folder_paths.get_folder_paths(model_files.FOLDER))
    return (f"{name} is not in the X-Portrait model folders ({searched}). Switch `download` on in this loader to "
            f"fetch it ({source.approx_bytes / 1e9:.1f} GB) from {source.url} into {folder}.{resume} Or download it "
            f"by hand and put it there, or choose a converted file.")
