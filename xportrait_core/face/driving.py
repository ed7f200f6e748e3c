"""From raw driving frames and landmarks to X-Portrait's hints (the official preparation, made robust).

Official rules (spec section 4): landmarks live on 256x256 copies of the frames; one affine,
chosen from a `best_frame`, maps the driving face box onto the portrait's; frames are resized
and warped at 512 (the 256-grid affine with its translation doubled); the eye/mouth windows are
taken around landmarks of the *aligned* frames. Here the aligned landmarks are the driving
landmarks mapped through the same affine, which is what re-detecting on the warped frame
approximates and avoids a second detector pass.

Beyond the official code: frames without a face get interpolated landmarks (flagged), a clip
without any face falls back to no alignment and black local hints (with a warning), landmarks
may be smoothed over time, and any square output size works (512 stays exact).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..finite_inputs import require_finite

from .alignment import AlignmentMode, choose_alignment, warp_frames
from .landmark_track import fill_missing_landmarks, smooth_landmarks
from .local_hints import local_patch_hint, patch_centres


@dataclass
class FaceLandmarks:
    """68-point landmarks of a batch of images: ``points`` [N,68,2] (x, y) in the pixels of images
    of size ``image_hw``; ``found`` [N] says which frames had a face (points of others are ignored)."""

    points: np.ndarray
    found: np.ndarray
    image_hw: tuple[int, int]

    def __post_init__(self):
        self.points = np.asarray(self.points, dtype=np.float32)
        self.found = np.asarray(self.found, dtype=bool)
        if self.points.ndim != 3 or self.points.shape[1:] != (68, 2):
            raise ValueError(f"landmarks: expected [frames, 68, 2] points, got {list(self.points.shape)}")
        if self.found.shape != (self.points.shape[0],):
            raise ValueError(f"landmarks: {self.points.shape[0]} frames of points but {self.found.shape[0]} found flags")
        # Frames without a face carry placeholder points; only the points that will be used must be finite.
        require_finite(np.where(self.found[:, None, None], self.points, 0.0), "landmarks",
                       "mark those frames as not found (found: false / null) or fix the landmark source")

    def __len__(self) -> int:
        return self.points.shape[0]

    def in_grid(self, grid: float) -> np.ndarray:
        """Points rescaled to a grid x grid copy of the images (the official 256 grid)."""
        h, w = self.image_hw
        return self.points * np.array([grid / w, grid / h], dtype=np.float32)


#: Largest request whose aligned frames are kept for the next one (a window and a bit).
WINDOW_MEMO_FRAMES = 32


@dataclass
class DrivingEncoding:
    """What the sampler needs from the driving clip, plus what the user may want to inspect.

    Kept compact for long clips: the driving frames as given (not copied), the alignment and the
    eye/mouth window centres. Aligned frames and hints are computed on request, per frame or for
    the whole clip, with the same operations either way (see aligned_rows / hint_rows)."""

    source: torch.Tensor             # [N,H,W,3] in [0,1], the driving frames as given
    size: int                        # side of the aligned frames
    backend: str                     # warp backend ("cv2" official, "torch")
    centres: np.ndarray | None       # [N,3,2] eye/mouth window centres (pixels), None = no face anywhere
    best_frame: int | None
    affine: np.ndarray | None        # [2,3] in output pixels, None = resize only
    interpolated: np.ndarray         # [N] frames whose landmarks were filled in
    warnings: list[str] = field(default_factory=list)
    # The last window's aligned frames: both hints of a window are asked for one after the
    # other. Whole-clip requests are not kept (they would hold a float copy of the clip).
    _last: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def frames(self) -> int:
        return self.source.shape[0]

    def aligned_rows(self, index) -> torch.Tensor:
        """Aligned frames [k,S,S,3] in [0,1] of the driving frames ``index`` (indices or a slice)."""
        if isinstance(index, torch.Tensor):
            index = index.to(self.source.device)
        key = None if isinstance(index, slice) else tuple(np.asarray(index).tolist())
        if key is not None and self._last is not None and self._last[0] == key:
            return self._last[1]
        aligned = warp_frames(self.source[index], self.affine, self.size, self.backend).to(self.source.device)
        if key is not None and len(key) <= WINDOW_MEMO_FRAMES:
            self._last = (key, aligned)
        return aligned

    def hint_rows(self, which: int, index) -> torch.Tensor:
        """Hint ``which`` (0 global, 1 local) of the frames ``index``: [k,3,S,S] in [-1,1]."""
        aligned = self.aligned_rows(index)
        return global_hint_rows(aligned) if which == 0 else self._local_rows(aligned, index)

    def hints(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        """Both hints of the frames ``index``, aligning the frames once (whole-clip requests included)."""
        aligned = self.aligned_rows(index)
        return global_hint_rows(aligned), self._local_rows(aligned, index)

    def _local_rows(self, aligned: torch.Tensor, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        centres = None if self.centres is None else self.centres[np.arange(self.frames)[index]]
        return local_hint_rows(aligned, centres)

    @property
    def aligned(self) -> torch.Tensor:
        """[N,S,S,3] in [0,1]."""
        return self.aligned_rows(slice(None))

    @property
    def global_hint(self) -> torch.Tensor:
        """[N,3,S,S] in [-1,1]: the aligned frames."""
        return self.hint_rows(0, slice(None))

    @property
    def local_hint(self) -> torch.Tensor:
        """[N,3,S,S] in [-1,1], -1 outside the eye/mouth windows."""
        return self.hint_rows(1, slice(None))


def global_hint_rows(aligned: torch.Tensor) -> torch.Tensor:
    """The motion ControlNet's hint of the given aligned frames [k,S,S,3]: [k,3,S,S] in [-1,1]."""
    return aligned.permute(0, 3, 1, 2) * 2 - 1


def local_hint_rows(aligned: torch.Tensor, centres: np.ndarray | None) -> torch.Tensor:
    """The local ControlNet's hint of the given aligned frames and their window centres."""
    if centres is None:
        return torch.full((aligned.shape[0], 3, *aligned.shape[1:3]), -1.0, dtype=aligned.dtype,
                          device=aligned.device)
    return local_patch_hint(aligned, centres)


def encode_driving(frames: torch.Tensor, driving: FaceLandmarks, source: FaceLandmarks | None,
                   size: int = 512, best_frame: int = AlignmentMode.AUTO, smoothing: float = 0.0,
                   backend: str = "cv2") -> DrivingEncoding:
    """Align the driving frames to the portrait and build the global and local hints."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"driving frames: expected an IMAGE batch [N,H,W,3], got {list(frames.shape)}")
    require_finite(frames, "driving frames", "check the video loader or the node that made the frames")
    if len(driving) != frames.shape[0]:
        raise ValueError(f"driving landmarks cover {len(driving)} frames but the clip has {frames.shape[0]}; "
                         "detect landmarks on the same frames")
    if size % 8 or size < 64:
        raise ValueError(f"size {size} must be a multiple of 8 and at least 64 (512 is the official size)")
    grid = size / 2
    warnings: list[str] = []
    filled = fill_missing_landmarks(driving.in_grid(grid), driving.found)
    if filled is None:
        warnings.append("no face in any driving frame: frames are only resized and local hints are black")
        points, interpolated = None, np.zeros(len(driving), dtype=bool)
    else:
        points, interpolated = filled
        if interpolated.any():
            warnings.append(f"no face in driving frames {np.flatnonzero(interpolated).tolist()}: "
                            "landmarks interpolated from neighbouring frames")
        if smoothing > 0:
            points = smooth_landmarks(points, smoothing)
    source_points = None
    if source is not None and len(source) and source.found[0]:
        source_points = source.in_grid(grid)[0]
    elif int(best_frame) != AlignmentMode.OFF:
        warnings.append("no face in the portrait: driving frames are not aligned to it")

    index, affine = choose_alignment(source_points, points, driving.found if points is not None else None,
                                     best_frame, scale=size / grid)
    centres = None
    if points is not None:
        aligned_points = points
        if affine is not None:
            grid_affine = np.array(affine, dtype=np.float64)
            grid_affine[:, 2] /= size / grid
            aligned_points = points @ grid_affine[:, :2].T.astype(np.float32) + grid_affine[:, 2].astype(np.float32)
        centres = np.asarray(patch_centres(aligned_points, target_res=size, landmark_res=grid), dtype=np.int64)
    return DrivingEncoding(frames, size, backend, centres, index, affine, interpolated, warnings)
