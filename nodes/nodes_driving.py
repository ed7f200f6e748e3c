"""Driving-preparation nodes: landmarks in, X-Portrait hints out; face crop and paste-back."""
from __future__ import annotations

import logging

import numpy as np

from comfy_api.latest import io, ui

from ..xportrait_core.face.crop import crop_face, face_crop_box, paste_back_with_mask
from ..xportrait_core.face.driving import FaceLandmarks, encode_driving
from .landmark_detection import detect_landmarks
from .landmark_files import draw_landmarks, landmark_file_choices, read_landmarks_json
from .motion_control import MotionHints
from .types import Driving, FaceCrop, Landmarks

CATEGORY = "X-Portrait/driving"
FACE_CATEGORY = "X-Portrait/face"
log = logging.getLogger("xportrait")


def _frame_list(frames: list[int], shown: int = 12) -> str:
    text = ", ".join(map(str, frames[:shown]))
    return text + (f" and {len(frames) - shown} more" if len(frames) > shown else "")


class LoadLandmarks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitLoadLandmarks", display_name="Load X-Portrait Landmarks", category=CATEGORY,
            description="68-point face landmarks (iBUG order, pixels of the given images) from a JSON file, e.g. "
                        "from another detector. Frames marked not found are filled in later.",
            inputs=[
                io.Image.Input("images", tooltip="The images the landmarks belong to (sets size and frame count)."),
                io.Combo.Input("landmarks_file", options=landmark_file_choices(), upload=io.UploadType.model,
                               tooltip="A .json file in ComfyUI's input folder (upload one with the button). Files "
                                       "outside the input folder are never read."),
                io.Combo.Input("entry", options=["driving", "source"], default="driving",
                               tooltip="Which entry of a {'source':..., 'driving':...} file to read."),
            ],
            outputs=[Landmarks.Output(display_name="landmarks", tooltip="68 points per frame, with the frames "
                                      "where no face was found flagged. X-Portrait Landmark Preview draws them.")])

    @classmethod
    def execute(cls, images, landmarks_file, entry) -> io.NodeOutput:
        landmarks = read_landmarks_json(landmarks_file, entry, tuple(images.shape[1:3]), images.shape[0])
        return io.NodeOutput(landmarks)


class DetectLandmarks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitDetectLandmarks", display_name="X-Portrait Detect Landmarks", category=CATEGORY,
            description="68-point face landmarks with the detector X-Portrait uses (S3FD face boxes + 2D-FAN), on "
                        "the GPU when there is one. Weights live in models/xportrait/face/. Frames without a face "
                        "are flagged, never an error.",
            inputs=[
                io.Image.Input("images", tooltip="Portrait or driving frames."),
                io.Combo.Input("face", options=["strongest", "largest", "index 0", "index 1", "index 2"],
                               default="strongest",
                               tooltip="Which face when there are several: strongest = the official choice."),
                io.Boolean.Input("official_256", default=True,
                                 tooltip="Detect on 256x256 copies like the official code (off: full resolution)."),
                io.Boolean.Input("download_weights", default=True,
                                 tooltip="Fetch missing weight files (~180 MB, hash-checked) into "
                                         "models/xportrait/face/. Off: fail with the file names and URLs."),
            ],
            outputs=[Landmarks.Output(display_name="landmarks", tooltip="68 points per frame, with the frames "
                                      "where no face was found flagged. X-Portrait Landmark Preview draws them.")])

    @classmethod
    def execute(cls, images, face, official_256, download_weights) -> io.NodeOutput:
        choice = int(face.split()[1]) if face.startswith("index") else face
        landmarks = detect_landmarks(images, choice, official_256, download_weights)
        missing = np.flatnonzero(~landmarks.found).tolist()
        if not missing:
            return io.NodeOutput(landmarks)
        note = (f"No face in {len(missing)} of {len(images)} frames ({_frame_list(missing)}); their landmarks are "
                "filled in from the neighbouring frames by Encode Driving.")
        log.warning("X-Portrait Detect Landmarks: %s", note)
        return io.NodeOutput(landmarks, ui=ui.PreviewText(note))


class LandmarkPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitLandmarkPreview", display_name="X-Portrait Landmark Preview", category=CATEGORY,
            description="Draws landmarks on their images, to check detection. Its output is a full copy of the "
                        "images: leave it out of long runs.",
            inputs=[io.Image.Input("images", tooltip="The images the landmarks belong to."),
                    Landmarks.Input("landmarks", tooltip="From Detect Landmarks or Load Landmarks.")],
            outputs=[io.Image.Output(display_name="preview", tooltip="The images with the found points drawn in "
                                     "green; frames without a face are left plain.")])

    @classmethod
    def execute(cls, images, landmarks) -> io.NodeOutput:
        if len(landmarks) != images.shape[0]:
            raise ValueError(f"X-Portrait Landmark Preview: {len(landmarks)} frames of landmarks for "
                             f"{images.shape[0]} images; connect the images the landmarks were found on")
        return io.NodeOutput(draw_landmarks(images, landmarks))


class EncodeDriving(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitEncodeDriving", display_name="X-Portrait Encode Driving", category=CATEGORY,
            description="Aligns the driving frames to the portrait (one affine for the clip, as X-Portrait) and "
                        "builds the motion and eye/mouth hints. Frames without a face never stop the run.",
            inputs=[
                io.Image.Input("driving_frames", tooltip="The driving video's frames."),
                Landmarks.Input("driving_landmarks", tooltip="Landmarks of the driving frames."),
                Landmarks.Input("source_landmarks", tooltip="Landmarks of the portrait."),
                io.Int.Input("best_frame", default=-1, min=-2, max=100000,
                             tooltip="Frame whose face box is mapped onto the portrait's: -1 = the frame closest "
                                     "to the portrait (official auto), -2 = no alignment, N = frame N."),
                io.Float.Input("landmark_smoothing", default=0.0, min=0.0, max=10.0, step=0.1,
                               tooltip="Temporal smoothing of landmarks in frames (0 = official, none)."),
                io.Int.Input("size", default=512, min=64, max=2048, step=8,
                             tooltip="Side of the aligned frames and hints (512 = official)."),
                io.Float.Input("fps", default=24.0, min=0.01, max=1000.0, step=0.001,
                               tooltip="Frame rate of the driving video; passed through for the video writer."),
            ],
            outputs=[Driving.Output(display_name="driving", tooltip="The encoded driving clip: connect to Motion "
                                    "Control and Start Latent. X-Portrait Driving Preview shows its aligned frames "
                                    "and hints."),
                     io.Float.Output(display_name="fps", tooltip="The driving clip's frame rate, passed through "
                                     "for the video writer.")])

    @classmethod
    def execute(cls, driving_frames, driving_landmarks, source_landmarks, best_frame, landmark_smoothing, size,
                fps) -> io.NodeOutput:
        encoding = encode_driving(driving_frames[..., :3], driving_landmarks, source_landmarks, size=size,
                                  best_frame=best_frame, smoothing=landmark_smoothing)
        for warning in encoding.warnings:
            log.warning("X-Portrait Encode Driving: %s", warning)
        # Nothing per frame is computed here: the frames are aligned and turned into hints per
        # window while sampling, so a long clip costs no extra copies of itself.
        shown = ui.PreviewText("\n".join(encoding.warnings)) if encoding.warnings else None
        return io.NodeOutput(MotionHints.from_encoding(encoding), float(fps), ui=shown)


class DrivingPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitDrivingPreview", display_name="X-Portrait Driving Preview", category=CATEGORY,
            description="What the motion ControlNets are shown: the driving frames aligned to the portrait and the "
                        "eye/mouth hint images. For checking the alignment; leave it out of long runs, where each "
                        "output holds a full copy of the clip.",
            inputs=[Driving.Input("driving", tooltip="From X-Portrait Encode Driving (or Driving From Hint Images).")],
            outputs=[io.Image.Output(display_name="aligned_frames", tooltip="Driving frames aligned to the portrait "
                                     "(the motion ControlNet's input)."),
                     io.Image.Output(display_name="local_hints", tooltip="The eye/mouth hint images (the local "
                                     "ControlNet's input): black outside the three patches.")])

    @classmethod
    def execute(cls, driving) -> io.NodeOutput:
        aligned, local = driving.preview_images()
        return io.NodeOutput(aligned, local)


class CropFace(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitCropFace", display_name="X-Portrait Crop Face", category=FACE_CATEGORY,
            description="Takes a square face region out of a larger or non-square portrait, for X-Portrait's "
                        "square input; Paste Back puts the generated frames back at full resolution.",
            inputs=[
                io.Image.Input("portrait", tooltip="The full portrait (first image of the batch)."),
                Landmarks.Input("landmarks", tooltip="Landmarks of the portrait (the face to crop)."),
                io.Int.Input("size", default=512, min=64, max=2048, step=8, tooltip="Side of the crop in pixels."),
                io.Float.Input("face_scale", default=1.8, min=1.0, max=4.0, step=0.05,
                               tooltip="Crop side relative to the landmarks' extent (larger shows more hair and shoulders)."),
            ],
            outputs=[io.Image.Output(display_name="face", tooltip="The square face crop: use it as the portrait."),
                     FaceCrop.Output(display_name="crop", tooltip="Where the crop came from: connect to Paste Back."),
                     Landmarks.Output(display_name="face_landmarks", tooltip="The portrait's landmarks in the "
                                      "crop's pixels (for Encode Driving).")])

    @classmethod
    def execute(cls, portrait, landmarks, size, face_scale) -> io.NodeOutput:
        if not landmarks.found[0]:
            raise ValueError("X-Portrait Crop Face: no face in the portrait's landmarks; check the landmark input")
        image = portrait[:1, :, :, :3]
        hw = tuple(image.shape[1:3])
        points = landmarks.points[0] * [hw[1] / landmarks.image_hw[1], hw[0] / landmarks.image_hw[0]]
        face, info = crop_face(image, face_crop_box(points, hw, scale=face_scale), size=size, padding="border")
        matrix = info.matrix()
        cropped = points @ matrix[:, :2].T + matrix[:, 2]
        return io.NodeOutput(face, info, FaceLandmarks(cropped[None], [True], (size, size)))


class PasteBack(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitPasteBack", display_name="X-Portrait Paste Back", category=FACE_CATEGORY,
            description="Composites generated face frames back into the full-resolution portrait with a feathered edge.",
            inputs=[
                io.Image.Input("portrait", tooltip="The full portrait the face was cropped from."),
                io.Image.Input("frames", tooltip="Generated square frames (any size; they are fitted to the crop box)."),
                FaceCrop.Input("crop", tooltip="From X-Portrait Crop Face."),
                io.Int.Input("feather", default=24, min=0, max=512,
                             tooltip="Width in portrait pixels of the soft edge inside the crop box."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The portrait with each generated frame "
                                     "composited in, at the portrait's resolution."),
                     io.Mask.Output(display_name="mask", tooltip="The feathered blend weight used (1 = generated "
                                    "face), for other compositing or restoration nodes.")])

    @classmethod
    def execute(cls, portrait, frames, crop, feather) -> io.NodeOutput:
        images, mask = paste_back_with_mask(portrait[0, :, :, :3], frames[..., :3], crop, feather=float(feather))
        return io.NodeOutput(images, mask[None])


DRIVING_NODES = [DetectLandmarks, LoadLandmarks, LandmarkPreview, EncodeDriving, DrivingPreview, CropFace, PasteBack]
