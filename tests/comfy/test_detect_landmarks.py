"""X-Portrait Detect Landmarks inside ComfyUI: weight lookup in models/xportrait/face/, offline
errors, and a run with stand-in (random) weights in the released files' format."""
from __future__ import annotations

import numpy
import torch


def _graph(download: bool, frames: int = 2):
    from comfy_execution.graph_utils import GraphBuilder
    g = GraphBuilder(prefix="lm")
    images = g.node("EmptyImage", width=96, height=80, batch_size=frames, color=0x907060)
    detect = g.node("XPortraitDetectLandmarks", images=images.out(0), face="strongest", official_256=True,
                    download_weights=download)
    drawn = g.node("XPortraitLandmarkPreview", images=images.out(0), landmarks=detect.out(0))
    preview = g.node("PreviewImage", images=drawn.out(0))
    return g.finalize(), preview.id


def test_missing_weights_offline_name_files_urls_and_folder(comfy):
    prompt, _ = _graph(download=False)
    result = comfy.run(prompt)
    assert not result.success
    text = result.error_text()
    for expected in ("2DFAN4-cd938726ad.zip", "s3fd-619a316812.pth", "https://www.adrianbulat.com/downloads/python-fan",
                     "face"):
        assert expected in text, f"{expected!r} missing from: {text[:1500]}"


def test_detects_with_stand_in_weights_in_a_face_folder(comfy, tmp_path_factory):
    import folder_paths
    from harness.tiny_models import write_stand_in_face_weights
    root = tmp_path_factory.mktemp("xportrait_face_models")
    write_stand_in_face_weights(root / "face")
    folder_paths.add_model_folder_path("xportrait", str(root))
    prompt, preview_id = _graph(download=False)
    result = comfy.run(prompt)
    assert result.success, result.error_text()
    assert len(result.outputs[preview_id]["images"]) == 2
    landmarks = comfy.node_class("XPortraitDetectLandmarks").execute(
        images=torch.rand(3, 80, 96, 3), face="strongest", official_256=True, download_weights=False).result[0]
    assert landmarks.points.shape == (3, 68, 2) and landmarks.image_hw == (80, 96)
    assert landmarks.found.dtype == bool and torch.isfinite(torch.from_numpy(landmarks.points)).all()
    assert not any(name.startswith("face/") for name in comfy.node_class("XPortraitLoadBaseModel")
                   .GET_NODE_INFO_V1()["input"]["required"]["model_file"][1].get("options", []))


def test_detector_input_is_converted_in_chunks_with_the_same_values(comfy):
    # Long clips: the float (float64 for the official resize) copies are made a chunk at a time;
    # the chunk size must not change a single value of what the detector sees.
    from harness.parity_rig import pack_module
    detection = pack_module("nodes.landmark_detection")
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(7, 72, 88, 3, generator=generator) * 1.2 - 0.1  # also outside 0..1
    for official in (True, False):
        whole = detection.detector_frames(images, official, chunk=len(images))
        chunked = detection.detector_frames(images, official, chunk=3)
        side = (detection.OFFICIAL_GRID,) * 2 if official else (72, 88)
        assert whole.dtype == chunked.dtype == numpy.uint8 and whole.shape == (7, *side, 3)
        assert numpy.array_equal(whole, chunked)
