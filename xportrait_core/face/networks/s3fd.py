"""The S3FD face-box detector, key-compatible with `s3fd-619a316812.pth`, and its box decoding
with `face_alignment`'s conventions.

Input: RGB frames on the 0..255 scale, turned into BGR minus the Caffe VGG mean (104, 117, 123);
any size (the package runs it on the whole frame). Output: six (class, box) head pairs on the
VGG16 features at strides 4, 8, ..., 128.

Decoding: every head cell is one prior, a square of side 4 * stride centred on the cell
(stride / 2 + index * stride); the box regression is SSD-style with variances 0.1 (centre) and
0.2 (log size). Faces are cells whose softmax face probability exceeds 0.5, after non-maximum
suppression at IoU 0.3 with the +1-pixel area convention. The package keeps candidates above 0.05
through the suppression and only then applies 0.5; a box is only ever suppressed by a stronger
kept one, so dropping the weak ones first gives the same faces and keeps the work on the GPU.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN_BGR = (104.0, 117.0, 123.0)
HEAD_STRIDES = (4, 8, 16, 32, 64, 128)
PRIOR_SIDE_PER_STRIDE = 4
CENTRE_VARIANCE, SIZE_VARIANCE = 0.1, 0.2
SCORE_THRESHOLD = 0.5
NMS_THRESHOLD = 0.3

# (name, in, out) of the VGG16 trunk, all 3x3 / padding 1; a 2x max pooling follows each group.
_VGG_GROUPS = (
    (("conv1_1", 3, 64), ("conv1_2", 64, 64)),
    (("conv2_1", 64, 128), ("conv2_2", 128, 128)),
    (("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256)),
    (("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512)),
    (("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)),
)
# Feature source of each head, its channels, and its class-logit count: the stride-4 head
# predicts three background logits and one face logit, max-reduced to two ("max-out").
_HEADS = (("conv3_3_norm", 256, 4), ("conv4_3_norm", 512, 2), ("conv5_3_norm", 512, 2),
          ("fc7", 1024, 2), ("conv6_2", 512, 2), ("conv7_2", 256, 2))


class L2Norm(nn.Module):
    """Per-position L2 normalisation over channels with a learned per-channel scale."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10) * self.weight.view(1, -1, 1, 1)


class S3FD(nn.Module):
    def __init__(self):
        super().__init__()
        for group in _VGG_GROUPS:
            for name, cin, cout in group:
                self.add_module(name, nn.Conv2d(cin, cout, 3, padding=1))
        # fc6 pads by 3 with a 3x3 kernel, so its map is 4 cells wider than stride 32 implies;
        # the decoding still assigns stride 32 (and 64, 128 below), as the released model expects.
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=3)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self.conv6_1 = nn.Conv2d(1024, 256, 1)
        self.conv6_2 = nn.Conv2d(256, 512, 3, stride=2, padding=1)
        self.conv7_1 = nn.Conv2d(512, 128, 1)
        self.conv7_2 = nn.Conv2d(128, 256, 3, stride=2, padding=1)
        self.conv3_3_norm = L2Norm(256, 10.0)
        self.conv4_3_norm = L2Norm(512, 8.0)
        self.conv5_3_norm = L2Norm(512, 5.0)
        for source, channels, classes in _HEADS:
            self.add_module(f"{source}_mbox_conf", nn.Conv2d(channels, classes, 3, padding=1))
            self.add_module(f"{source}_mbox_loc", nn.Conv2d(channels, 4, 3, padding=1))

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[N, 3, H, W] prepared input -> per head (class logits [N, 2, h, w], boxes [N, 4, h, w])."""
        taps = {}
        for group in _VGG_GROUPS:
            for name, _, _ in group:
                x = F.relu(self._modules[name](x))
            taps[group[-1][0]] = x
            x = F.max_pool2d(x, 2, 2)
        x = F.relu(self.fc7(F.relu(self.fc6(x))))
        taps["fc7"] = x
        x = F.relu(self.conv6_2(F.relu(self.conv6_1(x))))
        taps["conv6_2"] = x
        taps["conv7_2"] = F.relu(self.conv7_2(F.relu(self.conv7_1(x))))
        for name in ("conv3_3", "conv4_3", "conv5_3"):
            taps[f"{name}_norm"] = self._modules[f"{name}_norm"](taps[name])
        heads = []
        for source, _, classes in _HEADS:
            logits = self._modules[f"{source}_mbox_conf"](taps[source])
            if classes == 4:
                logits = torch.cat([logits[:, :3].amax(dim=1, keepdim=True), logits[:, 3:]], dim=1)
            heads.append((logits, self._modules[f"{source}_mbox_loc"](taps[source])))
        return heads


def prepare_input(frames: torch.Tensor) -> torch.Tensor:
    """RGB frames [N, H, W, 3] on the 0..255 scale (uint8 or float) -> [N, 3, H, W] float32 BGR
    minus the VGG mean, on the frames' device."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be RGB [N, H, W, 3], got shape {tuple(frames.shape)}")
    bgr = frames.to(torch.float32).flip(-1).permute(0, 3, 1, 2)
    return bgr - torch.tensor(MEAN_BGR, device=frames.device).view(1, 3, 1, 1)


def suppress(boxes: np.ndarray, threshold: float = NMS_THRESHOLD) -> np.ndarray:
    """Greedy non-maximum suppression of [K, 5] boxes (x0, y0, x1, y1, score): the kept rows,
    strongest first. Areas count pixels inclusively (+1), as the package does."""
    x0, y0, x1, y1, score = boxes.T
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(-score, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        w = np.maximum(0.0, np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]) + 1)
        overlap = w * h / (area[best] + area[rest] - w * h)
        order = rest[overlap <= threshold]
    return boxes[keep]


def decode(heads: list[tuple[torch.Tensor, torch.Tensor]], score_threshold: float = SCORE_THRESHOLD,
           nms_threshold: float = NMS_THRESHOLD) -> list[np.ndarray]:
    """Network output -> per frame a float64 [K, 5] array of faces (x0, y0, x1, y1, score) in
    input pixels, strongest first; K may be 0. Selection runs where the heads are; the box
    arithmetic runs in float64 on the few selected cells, like the package's numpy code."""
    if len(heads) != len(HEAD_STRIDES):
        raise ValueError(f"expected {len(HEAD_STRIDES)} S3FD heads, got {len(heads)}")
    frames = heads[0][0].shape[0]
    found: list[list[np.ndarray]] = [[] for _ in range(frames)]
    for (logits, regression), stride in zip(heads, HEAD_STRIDES):
        face = F.softmax(logits.float(), dim=1)[:, 1]
        frame, row, col = torch.nonzero(face > score_threshold, as_tuple=True)
        if frame.numel() == 0:
            continue
        loc = regression.float()[frame, :, row, col].cpu().numpy().astype(np.float64)  # [K, 4]
        score = face[frame, row, col].cpu().numpy().astype(np.float64)
        cells = torch.stack([col, row], dim=1).cpu().numpy().astype(np.float64)
        side = float(stride * PRIOR_SIDE_PER_STRIDE)
        centre = cells * stride + stride / 2 + loc[:, :2] * CENTRE_VARIANCE * side
        size = side * np.exp(loc[:, 2:] * SIZE_VARIANCE)
        corner = centre - size / 2
        boxes = np.concatenate([corner, corner + size, score[:, None]], axis=1)
        frame = frame.cpu().numpy()
        for f in np.unique(frame):
            found[f].append(boxes[frame == f])
    return [suppress(np.concatenate(rows), nms_threshold) if rows else np.zeros((0, 5)) for rows in found]


def load_s3fd(path: str | os.PathLike) -> S3FD:
    """An S3FD in eval mode with the released weights at `path` (CPU, float32)."""
    network = S3FD()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not an S3FD state_dict")
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{path} does not match the S3FD layout (is it s3fd-619a316812.pth?): {error}") from None
    return network.eval()
