"""Driving-frame preparation: landmarks -> clip alignment, local eye/mouth hints, face crops.

Images are float [N, H, W, 3] tensors in [0, 1]; landmarks are [68, 2] (x, y) pixel arrays,
per clip [N, 68, 2] with a boolean `found` mask [N].
"""

from .alignment import (AlignmentMode, alignment_affine, best_frame_by_landmarks, choose_alignment,
                        warp_frames)
from .crop import CropInfo, crop_face, face_crop_box, feather_mask, paste_back, select_face
from .landmark_track import fill_missing_landmarks, smooth_landmarks
from .local_hints import local_patch_hint, patch_centres

__all__ = [
    "AlignmentMode", "alignment_affine", "best_frame_by_landmarks", "choose_alignment", "warp_frames",
    "CropInfo", "crop_face", "face_crop_box", "feather_mask", "paste_back", "select_face",
    "fill_missing_landmarks", "smooth_landmarks", "local_patch_hint", "patch_centres",
]
