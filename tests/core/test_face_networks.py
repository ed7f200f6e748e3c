"""2D-FAN and S3FD networks: released-weight layouts, shapes, safe weight reading, box decoding."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest
import torch

from xportrait_core.face.networks import (FAN2D, S3FD, TorchScriptArchiveError, decode, is_torchscript_archive,
                                          load_fan, load_s3fd, prepare_input, read_fan_weights,
                                          read_torchscript_tensors, suppress)

# Sizes of the released files (bytes). s3fd's payload beyond its tensors is a few KB of pickle;
# the FAN archive also carries its TorchScript code.
S3FD_TENSOR_BYTES = 89_836_440
FAN_ZIP_BYTES = 96_316_515


def _bn(prefix: str, channels: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def _conv(prefix: str, cout: int, cin: int, kernel: int, bias: bool = True) -> dict[str, tuple]:
    shapes = {f"{prefix}.weight": (cout, cin, kernel, kernel)}
    if bias:
        shapes[f"{prefix}.bias"] = (cout,)
    return shapes


def _conv_block(prefix: str, cin: int, cout: int) -> dict[str, tuple]:
    shapes = {**_bn(f"{prefix}.bn1", cin), **_conv(f"{prefix}.conv1", cout // 2, cin, 3, False),
              **_bn(f"{prefix}.bn2", cout // 2), **_conv(f"{prefix}.conv2", cout // 4, cout // 2, 3, False),
              **_bn(f"{prefix}.bn3", cout // 4), **_conv(f"{prefix}.conv3", cout // 4, cout // 4, 3, False)}
    if cin != cout:
        shapes.update(_bn(f"{prefix}.downsample.0", cin))
        shapes.update(_conv(f"{prefix}.downsample.2", cout, cin, 1, False))
    return shapes


def _released_fan_inventory() -> dict[str, tuple]:
    """2DFAN-4 as face_alignment defines it: stem, then 4 stacks of a depth-4 hourglass of 256."""
    shapes = {**_conv("conv1", 64, 3, 7), **_bn("bn1", 64), **_conv_block("conv2", 64, 128),
              **_conv_block("conv3", 128, 128), **_conv_block("conv4", 128, 256)}
    for i in range(4):
        for level in (1, 2, 3, 4):
            for branch in ("b1", "b2", "b3"):
                shapes.update(_conv_block(f"m{i}.{branch}_{level}", 256, 256))
        shapes.update(_conv_block(f"m{i}.b2_plus_1", 256, 256))
        shapes.update(_conv_block(f"top_m_{i}", 256, 256))
        shapes.update(_conv(f"conv_last{i}", 256, 256, 1))
        shapes.update(_bn(f"bn_end{i}", 256))
        shapes.update(_conv(f"l{i}", 68, 256, 1))
        if i < 3:
            shapes.update(_conv(f"bl{i}", 256, 256, 1))
            shapes.update(_conv(f"al{i}", 256, 68, 1))
    return shapes


def _released_s3fd_inventory() -> dict[str, tuple]:
    vgg = [("conv1_1", 3, 64), ("conv1_2", 64, 64), ("conv2_1", 64, 128), ("conv2_2", 128, 128),
           ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv4_1", 256, 512),
           ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv5_1", 512, 512), ("conv5_2", 512, 512),
           ("conv5_3", 512, 512)]
    shapes = {}
    for name, cin, cout in vgg:
        shapes.update(_conv(name, cout, cin, 3))
    shapes.update({**_conv("fc6", 1024, 512, 3), **_conv("fc7", 1024, 1024, 1), **_conv("conv6_1", 256, 1024, 1),
                   **_conv("conv6_2", 512, 256, 3), **_conv("conv7_1", 128, 512, 1), **_conv("conv7_2", 256, 128, 3)})
    for name, channels in (("conv3_3_norm", 256), ("conv4_3_norm", 512), ("conv5_3_norm", 512)):
        shapes[f"{name}.weight"] = (channels,)
    for source, channels, classes in (("conv3_3_norm", 256, 4), ("conv4_3_norm", 512, 2), ("conv5_3_norm", 512, 2),
                                      ("fc7", 1024, 2), ("conv6_2", 512, 2), ("conv7_2", 256, 2)):
        shapes.update(_conv(f"{source}_mbox_conf", classes, channels, 3))
        shapes.update(_conv(f"{source}_mbox_loc", 4, channels, 3))
    return shapes


def _inventory(module: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_fan_layout_matches_the_released_2dfan4():
    expected = _released_fan_inventory()
    assert _inventory(FAN2D()) == expected
    float_bytes = 4 * sum(int(np.prod(s)) for k, s in expected.items() if not k.endswith("num_batches_tracked"))
    # The archive is the float32 tensors plus well under 1% of code, pickle and zip headers.
    assert 0.99 * FAN_ZIP_BYTES < float_bytes < FAN_ZIP_BYTES


def test_s3fd_layout_matches_the_released_file():
    expected = _released_s3fd_inventory()
    assert _inventory(S3FD()) == expected
    assert 4 * sum(int(np.prod(s)) for s in expected.values()) == S3FD_TENSOR_BYTES
    assert torch.equal(S3FD().conv4_3_norm.weight, torch.full((512,), 8.0))  # L2Norm starts at its scale


def test_network_output_shapes():
    torch.manual_seed(0)
    with torch.no_grad():
        heatmaps = FAN2D(stacks=1).eval()(torch.rand(1, 3, 256, 256))
        heads = S3FD().eval()(torch.randn(1, 3, 256, 192))
    assert heatmaps.shape == (1, 68, 64, 64)
    # Strides 4..32 divide the frame; fc6's padding of 3 widens the stride-32 map and those after by 4.
    expected = [(64, 48), (32, 24), (16, 12), (12, 10), (6, 5), (3, 3)]
    assert [tuple(cls.shape[2:]) for cls, _ in heads] == expected
    assert all(cls.shape[1] == 2 and loc.shape[1] == 4 and loc.shape[2:] == cls.shape[2:] for cls, loc in heads)
    with pytest.raises(ValueError, match="FAN input"):
        FAN2D(stacks=1)(torch.rand(1, 256, 256))
    with pytest.raises(ValueError, match="stacks"):
        FAN2D(stacks=0)


def test_prepare_input_is_bgr_minus_vgg_mean():
    frames = torch.tensor([[[[10, 20, 30]]]], dtype=torch.uint8)  # one RGB pixel
    prepared = prepare_input(frames)
    assert prepared.shape == (1, 3, 1, 1)
    assert torch.allclose(prepared.flatten(), torch.tensor([30 - 104.0, 20 - 117.0, 10 - 123.0]))


def _heads(frames: int, size: int = 64) -> list[list[torch.Tensor]]:
    """Background-only S3FD output for `size`-pixel frames (face logit far below background)."""
    heads = []
    for stride in (4, 8, 16, 32, 64, 128):
        cells = max(size // stride, 1)
        cls = torch.zeros(frames, 2, cells, cells)
        cls[:, 0] = 10.0
        heads.append([cls, torch.zeros(frames, 4, cells, cells)])
    return heads


def _set_face(heads, head: int, frame: int, row: int, col: int, logit: float, loc=(0.0, 0.0, 0.0, 0.0)):
    heads[head][0][frame, :, row, col] = torch.tensor([0.0, logit])
    heads[head][1][frame, :, row, col] = torch.tensor(loc)


def test_decode_applies_priors_variances_and_threshold():
    heads = _heads(2)
    loc = (0.5, -1.0, 0.3, -0.2)
    _set_face(heads, 2, 0, 1, 2, 4.0, loc)             # stride 16: prior centre (40, 24), side 64
    _set_face(heads, 0, 1, 3, 3, -0.2)                 # face probability just below 0.5
    boxes = decode(heads)
    assert boxes[1].shape == (0, 5)
    (x0, y0, x1, y1, score), = boxes[0]
    cx, cy = 40 + 0.5 * 0.1 * 64, 24 - 1.0 * 0.1 * 64
    w, h = 64 * np.exp(0.3 * 0.2), 64 * np.exp(-0.2 * 0.2)
    assert np.allclose([x0, y0, x1, y1], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-4)
    assert score == pytest.approx(1 / (1 + np.exp(-4.0)), abs=1e-6)
    assert len(decode(heads, score_threshold=0.4)[1]) == 1


def test_suppress_keeps_strongest_of_overlapping_boxes():
    boxes = np.array([[0, 0, 99, 99, 0.8], [5, 5, 104, 104, 0.9], [200, 200, 249, 249, 0.7],
                      [0, 0, 99, 59, 0.6]], dtype=np.float64)
    kept = suppress(boxes, 0.3)
    # Inclusive areas: IoU(0, 1) = 9025 / 10975; IoU(3, 1) = 5225 / 10775; box 2 is apart.
    assert np.array_equal(kept[:, 4], [0.9, 0.7])
    assert len(suppress(boxes, 0.99)) == 4


def _fan_archive(path, stacks: int = 1) -> FAN2D:
    """A TorchScript archive of a random FAN2D at `path` (traced on a small input: the module tree
    and weights are what matter, not the recorded graph); returns the module."""
    torch.manual_seed(1)
    network = FAN2D(stacks=stacks).eval()
    with torch.no_grad():  # non-default BatchNorm statistics, so buffers are checked too
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    torch.jit.trace(network, torch.rand(1, 3, 64, 64), check_trace=False).save(str(path))
    return network


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_torchscript_weights_read_without_running_the_archive(tmp_path):
    archive = tmp_path / "fan.zip"
    network = _fan_archive(archive)
    assert is_torchscript_archive(archive)
    tensors = read_torchscript_tensors(archive)
    reference = network.state_dict()
    assert tensors.keys() == reference.keys()
    assert all(torch.equal(tensors[k], reference[k]) for k in reference)
    assert read_fan_weights(archive).keys() == reference.keys()
    with pytest.raises(ValueError, match="2DFAN-4 layout"):  # one stack is not the released network
        load_fan(archive)


def test_full_fan_loads_from_a_plain_state_dict(tmp_path):
    torch.manual_seed(2)
    reference = FAN2D().state_dict()
    plain = tmp_path / "2DFAN4-11f355bf06.pth.tar"
    # An older save: no num_batches_tracked entries, and a DataParallel "module." prefix.
    torch.save({f"module.{k}": v for k, v in reference.items() if not k.endswith("num_batches_tracked")}, plain)
    loaded = load_fan(plain)
    assert not loaded.training
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in reference.items()
               if not k.endswith("num_batches_tracked"))


def test_archive_reader_refuses_code(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(Payload(), protocol=2))
        z.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
    with pytest.raises(TorchScriptArchiveError, match="does not allow"):
        read_torchscript_tensors(archive)
    assert not marker.exists()
    not_zip = tmp_path / "plain.bin"
    not_zip.write_bytes(b"not a zip")
    assert not is_torchscript_archive(not_zip)
    with pytest.raises(TorchScriptArchiveError, match="not a zip"):
        read_torchscript_tensors(not_zip)


def test_s3fd_loads_released_style_state_dict(tmp_path):
    torch.manual_seed(3)
    network = S3FD()
    torch.save(network.state_dict(), tmp_path / "s3fd.pth")
    loaded = load_s3fd(tmp_path / "s3fd.pth")
    assert not loaded.training
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in network.state_dict().items())
    torch.save({"fc6.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="S3FD layout"):
        load_s3fd(tmp_path / "bad.pth")
