"""The loaders' `download` choice seen from the UI: a real ComfyUI server whose models folder is
empty fetches a tiny official-format checkpoint from a local HTTP server, the node's progress
reaches the websocket, the file lands in models/xportrait and the graph runs on it; with the
server gone, the UI gets one error naming the file, the URL and the folder.
"""
from __future__ import annotations

import hashlib

import pytest

from harness.file_server import FileServer, sources_env
from harness.server import ComfyServer
from xportrait_core.checkpoint.tiny import build_random_checkpoint, save_official_th

NAME = "model_state-415001.th"
URL_PATH = "/fffiloni/X-Portrait/resolve/main/" + NAME
LOADER = "1"


def base_model_prompt(weight_dtype: str) -> dict:
    """Load X-Portrait Base Model (download on) -> its VAE decodes an empty latent -> preview."""
    return {
        LOADER: {"class_type": "XPortraitLoadBaseModel",
                 "inputs": {"model_file": NAME, "weight_dtype": weight_dtype, "download": True}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": [LOADER, 1]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


@pytest.mark.server
def test_download_from_the_graph_shows_progress_and_offline_error_over_http(tmp_path):
    source = tmp_path / "source" / NAME
    source.parent.mkdir()
    save_official_th(source, build_random_checkpoint(seed=9))
    data = source.read_bytes()
    models = tmp_path / "models"
    models.mkdir()
    target = models / "xportrait"  # ComfyUI's models/xportrait: the first folder of the key

    with FileServer({URL_PATH: data}) as files:
        url = files.url(URL_PATH)
        env = {"XPORTRAIT_DOWNLOAD_SOURCES": sources_env(NAME, url, hashlib.sha256(data).hexdigest(), len(data))}
        server = ComfyServer(tmp_path / "comfy", {}, extra_args=["--models-directory", str(models)], env=env).start()
        try:
            spec = server.get_json("/object_info/XPortraitLoadBaseModel")["XPortraitLoadBaseModel"]["input"]
            assert NAME in spec["required"]["model_file"][1]["options"] and not target.exists()

            done = server.run(base_model_prompt("fp32"), timeout=300)
            assert "rejected" not in done, done.get("rejected")
            assert done["history"]["status"]["status_str"] == "success", done["history"]["status"]
            assert (target / NAME).read_bytes() == data
            assert [r.range for r in files.requests] == [""]
            progress = [e["data"] for e in done["events"]
                        if e.get("type") == "progress" and e["data"].get("prompt_id") == done["prompt_id"]]
            mine = [p for p in progress if p["node"] == LOADER]
            assert mine, f"no progress message for the loader; got {progress}"
            assert all(p["max"] == len(data) for p in mine)
            assert mine[-1]["value"] == len(data)
            assert len(done["history"]["outputs"]["4"]["images"]) == 1

            # Offline: the file is gone and nothing answers at its address any more.
            files.close()
            (target / NAME).unlink()
            failed = server.run(base_model_prompt("fp16"), timeout=300)
            errors = [e["data"] for e in failed["events"] if e.get("type") == "execution_error"]
            assert len(errors) == 1, errors
            error = errors[0]
            assert error["node_id"] == LOADER and error["exception_type"] == "xportrait.OfflineError"
            message = error["exception_message"]
            assert NAME in message and url in message and str(target) in message, message
            assert not (target / NAME).exists()
        except AssertionError:
            print(server.log())
            raise
        finally:
            server.stop()
