"""A template's thumbnail: a square card with a caption, the workflow drawn as a diagram (groups,
nodes, wires) and one line per group saying what it holds.

The frontend asks for a custom node template's picture at /api/workflow_templates/<pack>/<name>.jpg,
so each template gets a same-name JPEG beside its JSON.
"""
from __future__ import annotations

import cv2
import numpy as np

WIDTH, HEIGHT, MARGIN, CAPTION, DIAGRAM = 512, 512, 14, 56, 200
BACKGROUND = (32, 32, 32)
NODE_BODY, NODE_TITLE_BAR = (70, 70, 70), (48, 48, 48)
WIRE_COLORS = {"IMAGE": (160, 210, 100), "MODEL": (210, 160, 180), "VAE": (80, 80, 230), "LATENT": (220, 130, 255),
               "CONDITIONING": (90, 190, 250), "FLOAT": (170, 220, 170), "VIDEO": (120, 200, 255)}


def _bgr(hex_color: str) -> tuple[int, int, int]:
    value = hex_color.lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    r, g, b = (int(value[i:i + 2], 16) for i in (0, 2, 4))
    return b, g, r


def render(workflow: dict, caption: str, lines: list[str]) -> np.ndarray:
    """The card as a BGR image of WIDTH x HEIGHT; lines[i] is written beside group i's colour."""
    boxes = [g["bounding"] for g in workflow["groups"]]
    boxes += [[*n["pos"], *n["size"]] for n in workflow["nodes"]]
    left = min(b[0] for b in boxes)
    top = min(b[1] for b in boxes) - 30
    right = max(b[0] + b[2] for b in boxes)
    bottom = max(b[1] + b[3] for b in boxes)
    scale = min((WIDTH - 2 * MARGIN) / (right - left), (DIAGRAM - MARGIN) / (bottom - top))
    shift_x = MARGIN + (WIDTH - 2 * MARGIN - scale * (right - left)) / 2
    shift_y = CAPTION + MARGIN

    def at(x, y):
        return int(round(shift_x + (x - left) * scale)), int(round(shift_y + (y - top) * scale))

    image = np.full((HEIGHT, WIDTH, 3), BACKGROUND, np.uint8)
    for group in workflow["groups"]:
        x, y, w, h = group["bounding"]
        tint = np.zeros_like(image)
        cv2.rectangle(tint, at(x, y), at(x + w, y + h), _bgr(group["color"]), -1)
        image = cv2.addWeighted(image, 1.0, tint, 0.45, 0)
    by_id = {n["id"]: n for n in workflow["nodes"]}
    for _, origin, slot, target, target_slot, link_type in workflow["links"]:
        a, b = by_id[origin], by_id[target]
        start = np.array(at(a["pos"][0] + a["size"][0], a["pos"][1] + 14 + 22 * slot), float)
        end = np.array(at(b["pos"][0], b["pos"][1] + 14 + 22 * target_slot), float)
        bend = max(12.0, abs(end[0] - start[0]) / 2)
        t = np.linspace(0, 1, 24)[:, None]
        c1, c2 = start + [bend, 0], end - [bend, 0]
        curve = (1 - t) ** 3 * start + 3 * (1 - t) ** 2 * t * c1 + 3 * (1 - t) * t ** 2 * c2 + t ** 3 * end
        cv2.polylines(image, [curve.round().astype(np.int32)], False, WIRE_COLORS.get(link_type, (200, 200, 200)),
                      1, cv2.LINE_AA)
    for node in workflow["nodes"]:
        x, y = node["pos"]
        w, h = node["size"]
        note = node["type"] in ("Note", "MarkdownNote")
        cv2.rectangle(image, at(x, y - 30), at(x + w, y + h), (60, 85, 100) if note else NODE_BODY, -1)
        cv2.rectangle(image, at(x, y - 30), at(x + w, y), (40, 55, 70) if note else NODE_TITLE_BAR, -1)
    _text(image, caption, (MARGIN, 36), 0.75)
    y = at(left, bottom)[1] + 44
    for group, line in zip(workflow["groups"], lines):
        cv2.rectangle(image, (MARGIN, y - 14), (MARGIN + 14, y), _bgr(group["color"]), -1)
        for k, part in enumerate(_wrap(line, 48)):
            _text(image, part, (MARGIN + 24, y + 22 * k), 0.5)
        y += 22 * len(_wrap(line, 48)) + 12
    return image


def _wrap(text: str, width: int) -> list[str]:
    out, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return out + [line]


def _text(image, text: str, at: tuple[int, int], size: float) -> None:
    cv2.putText(image, text, at, cv2.FONT_HERSHEY_SIMPLEX, size, (240, 240, 240), 1, cv2.LINE_AA)


def thumbnail_jpeg(workflow: dict, caption: str, lines: list[str]) -> bytes:
    ok, data = cv2.imencode(".jpg", render(workflow, caption, lines), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()
