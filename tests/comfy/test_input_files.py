"""File inputs come only from ComfyUI's input folder: the landmark file is a combo of that folder,
and names that resolve elsewhere are refused - in the node and by ComfyUI's validation over HTTP -
without the file ever being opened or quoted."""
from __future__ import annotations

import json

import pytest

from harness.parity_rig import pack_module

SECRET = "top-secret-key-material"


@pytest.fixture()
def input_folder(comfy, tmp_path):
    import folder_paths
    inputs = tmp_path / "input"
    inputs.mkdir()
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({SECRET: 1}))
    (inputs / "good.json").write_text(json.dumps({"driving": {"frames": [{"found": True, "lmk68": [[1, 2]] * 68}]}}))
    (inputs / "escape.json").symlink_to(outside)
    previous = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(inputs))
    yield inputs, outside
    folder_paths.set_input_directory(previous)


def test_landmark_combo_lists_json_files_of_the_input_folder(input_folder):
    node = pack_module("nodes.nodes_driving").LoadLandmarks
    spec = node.INPUT_TYPES()["required"]["landmarks_file"]
    assert spec[0] == "COMBO" and spec[1]["options"] == ["escape.json", "good.json"]
    assert spec[1].get("file_upload"), "the combo should offer an upload button like Load Image"


@pytest.mark.parametrize("name", ["../outside.json", "ABSOLUTE", "escape.json", "../../../../etc/passwd"])
def test_paths_outside_the_input_folder_are_refused_without_reading(input_folder, name):
    _, outside = input_folder
    name = str(outside) if name == "ABSOLUTE" else name
    read = pack_module("nodes.landmark_files").read_landmarks_json
    with pytest.raises(ValueError) as error:
        read(name, "driving", (64, 64), 1)
    assert "outside ComfyUI's input folder" in str(error.value) and SECRET not in str(error.value)


def test_good_file_reads_and_errors_quote_no_content(input_folder):
    inputs, _ = input_folder
    read = pack_module("nodes.landmark_files").read_landmarks_json
    assert read("good.json", "driving", (64, 64), 1).points.shape == (1, 68, 2)
    (inputs / "keys.json").write_text(json.dumps({SECRET: {}}))
    with pytest.raises(ValueError) as error:
        read("keys.json", "driving", (64, 64), 1)
    assert "no 'driving' entry" in str(error.value) and SECRET not in str(error.value)


def test_http_prompt_with_an_outside_path_is_rejected(comfy_server):
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
              "2": {"class_type": "XPortraitLoadLandmarks",
                    "inputs": {"images": ["1", 0], "landmarks_file": "/etc/passwd", "entry": "driving"}},
              "3": {"class_type": "XPortraitLandmarkPreview", "inputs": {"images": ["1", 0], "landmarks": ["2", 0]}},
              "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}
    run = comfy_server.run(prompt)
    assert "rejected" in run, "ComfyUI accepted a landmark path outside its input folder"
    assert "root:" not in json.dumps(run["rejected"])
