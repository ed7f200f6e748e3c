"""The 2D-FAN weights: an unreadable TorchScript archive falls back to the plain-weights release
(`2DFAN4-11f355bf06.pth.tar`, a bare state_dict read weights-only), from the folder or downloaded."""
from __future__ import annotations

import hashlib
import logging
import pickle
import zipfile
from dataclasses import replace

import pytest
import torch

from harness.file_server import FileServer
from xportrait_core.face.detector import WEIGHTS, MissingWeightsError
from xportrait_core.face.fan_weights import PLAIN_FAN, load_fan_network
from xportrait_core.face.networks.fan2d import FAN2D

ARCHIVE = WEIGHTS["fan"].name


@pytest.fixture(scope="module")
def network() -> FAN2D:
    """A random full 2DFAN-4 with non-default BatchNorm statistics (so buffers are compared too)."""
    torch.manual_seed(5)
    fan = FAN2D().eval()
    with torch.no_grad():
        for module in fan.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    return fan


@pytest.fixture(scope="module")
def plain_release(network, tmp_path_factory):
    """The network in the plain release's format: a bare state_dict in torch's legacy (pre-zip)
    pickle format, without the num_batches_tracked counters older torch did not save."""
    path = tmp_path_factory.mktemp("plain") / PLAIN_FAN.name
    state = {k: v for k, v in network.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path


def _unreadable_archives(folder):
    """Archives the weights-only reader must give up on, by kind."""
    class Payload:
        def __reduce__(self):
            return (print, ("archive code ran",))

    asks_for_code = folder / "asks_for_code.zip"
    with zipfile.ZipFile(asks_for_code, "w") as archive:
        archive.writestr("fan/data.pkl", pickle.dumps(Payload(), protocol=2))
        archive.writestr("fan/constants.pkl", pickle.dumps((), protocol=2))
    cut = folder / "cut.zip"
    cut.write_bytes(asks_for_code.read_bytes()[:40])
    return {"asks for code": asks_for_code, "cut short": cut}


def _same_weights(loaded: FAN2D, network: FAN2D) -> bool:
    reference = network.state_dict()
    return all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items()
               if not k.endswith("num_batches_tracked"))


@pytest.mark.parametrize("kind", ["asks for code", "cut short"])
def test_unreadable_archive_falls_back_to_the_plain_release(kind, network, plain_release, tmp_path, caplog, capsys):
    folder = tmp_path / "face"
    folder.mkdir()
    (folder / ARCHIVE).write_bytes(_unreadable_archives(tmp_path)[kind].read_bytes())
    (folder / PLAIN_FAN.name).write_bytes(plain_release.read_bytes())
    with caplog.at_level(logging.WARNING, logger="xportrait"):
        loaded = load_fan_network(folder, allow_download=False)
    assert _same_weights(loaded, network) and not loaded.training
    notes = [r.getMessage() for r in caplog.records if r.name == "xportrait"]
    assert len(notes) == 1 and ARCHIVE in notes[0] and PLAIN_FAN.name in notes[0], notes
    assert "archive code ran" not in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_a_readable_archive_is_used_without_the_fallback(network, tmp_path, caplog):
    folder = tmp_path / "face"
    folder.mkdir()
    torch.jit.trace(network, torch.rand(1, 3, 64, 64), check_trace=False).save(str(folder / ARCHIVE))
    (folder / PLAIN_FAN.name).write_bytes(b"never read")
    with caplog.at_level(logging.WARNING, logger="xportrait"):
        loaded = load_fan_network(folder, allow_download=False)
    assert _same_weights(loaded, network)
    assert not [r for r in caplog.records if r.name == "xportrait"]


def test_without_the_plain_file_and_downloads_off_the_error_names_it(tmp_path):
    folder = tmp_path / "face"
    folder.mkdir()
    (folder / ARCHIVE).write_bytes(_unreadable_archives(tmp_path)["cut short"].read_bytes())
    with pytest.raises(MissingWeightsError) as caught:
        load_fan_network(folder, allow_download=False)
    message = str(caught.value)
    assert ARCHIVE in message and "could not be read" in message
    assert PLAIN_FAN.name in message and PLAIN_FAN.url in message and str(folder) in message


@pytest.fixture
def site(plain_release):
    """The plain FAN release on a local HTTP server: its URL there."""
    with FileServer({"/" + PLAIN_FAN.name: plain_release.read_bytes()}) as files:
        yield files.url("/" + PLAIN_FAN.name)


def test_the_plain_release_is_downloaded_and_hash_checked_when_allowed(network, plain_release, site, tmp_path):
    served = replace(PLAIN_FAN, url=site,
                     sha256=hashlib.sha256(plain_release.read_bytes()).hexdigest())
    folder = tmp_path / "face"
    folder.mkdir()
    (folder / ARCHIVE).write_bytes(_unreadable_archives(tmp_path)["asks for code"].read_bytes())

    with pytest.raises(MissingWeightsError, match="sha256"):
        load_fan_network(folder, allow_download=True, plain=replace(served, sha256="0" * 64))
    assert not (folder / PLAIN_FAN.name).exists()

    loaded = load_fan_network(folder, allow_download=True, plain=served)
    assert _same_weights(loaded, network)
    assert (folder / PLAIN_FAN.name).read_bytes() == plain_release.read_bytes()


def test_plain_release_registry_entry():
    prefix = PLAIN_FAN.name.split("-")[-1].split(".")[0]
    assert PLAIN_FAN.sha256.startswith(prefix) and len(PLAIN_FAN.sha256) == 64
    assert PLAIN_FAN.url.endswith("/" + PLAIN_FAN.name) and PLAIN_FAN.url.startswith(WEIGHTS["fan"].url.rsplit("/", 1)[0])
