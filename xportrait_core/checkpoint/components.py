"""Where each component lives inside a checkpoint, and what kind of file a state dict is.

Official prefixes (``model_state-415001.th``):

=================  ==================================================================
unet               ``model.diffusion_model.`` except keys containing ``_motion_module``
temporal           ``model.diffusion_model.{input,output}_blocks_motion_module.*``
reference_net      ``appearance_control_model.``
pose_controlnet    ``pose_control_model.``
local_controlnet   ``local_pose_control_model.``
vae                ``first_stage_model.``
text_encoder       ``cond_stage_model.`` (keys then start with ``transformer.text_model.``)
buffers            the 13 DDPM schedule buffers, at the top level
=================  ==================================================================

Files written by the converter carry ``xportrait.component`` metadata: a single-component file
holds that component's keys without prefix; the base file keeps the standard SD1.5 layout.
"""
from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .architecture import HINT_BLOCK, SCHEDULE_BUFFERS

UNET_PREFIX = "model.diffusion_model."
MOTION_MARKER = "_motion_module"
PREFIXES = {
    "reference_net": "appearance_control_model.",
    "pose_controlnet": "pose_control_model.",
    "local_controlnet": "local_pose_control_model.",
    "vae": "first_stage_model.",
    "text_encoder": "cond_stage_model.",
}
#: Keys that match no component: training left-overs, ignored with a warning.
OTHER = "other"
#: CLIP text models saved by transformers >= 4.31 drop the ``text_model.`` level that the official
#: checkpoint (transformers 4.30) has; both layouts are read as the official one.
CLIP_ROOT, CLIP_TEXT_ROOT = "transformer.", "transformer.text_model."
BASE = "base_sd15"  # the converter's combined SD1.5 file (UNet, VAE, text encoder, buffers)
COMPONENT_META = "xportrait.component"


class FileKind(enum.Enum):
    """What a state dict is, judged by its key signature (and converter metadata)."""

    XPORTRAIT = "the official X-Portrait checkpoint"
    XPORTRAIT_COMPONENT = "a component file written by xportrait_core.convert"
    SD15 = ("a plain Stable Diffusion 1.5 checkpoint (UNet and VAE only, none of X-Portrait's "
            "temporal modules, reference net or motion ControlNets)")
    ANIMATEDIFF = "an AnimateDiff motion module (diffusers layout), not X-Portrait's temporal modules"
    CONTROLNET = "an ordinary ControlNet, not one of X-Portrait's motion ControlNets"
    UNKNOWN = "not a checkpoint layout this pack knows"


def metadata_of(state_dict: Any) -> dict[str, str]:
    """Safetensors header metadata when the mapping came from `safe_load` (else empty)."""
    return dict(getattr(state_dict, "metadata", None) or {})


def unwrap(state_dict: Mapping) -> Mapping:
    """Lightning-style files nest the weights under ``state_dict``."""
    inner = state_dict.get("state_dict") if "state_dict" in state_dict else None
    return inner if isinstance(inner, Mapping) else state_dict


def component_of(key: str) -> tuple[str, str]:
    """(component, key with the component's prefix stripped) for an official-layout key."""
    if key.startswith(UNET_PREFIX):
        inner = key[len(UNET_PREFIX):]
        return ("temporal" if MOTION_MARKER in inner else "unet"), inner
    for component, prefix in PREFIXES.items():
        if key.startswith(prefix):
            inner = key[len(prefix):]
            if component == "text_encoder" and inner.startswith(CLIP_ROOT) and not inner.startswith(CLIP_TEXT_ROOT):
                inner = CLIP_TEXT_ROOT + inner[len(CLIP_ROOT):]
            return component, inner
    if key in SCHEDULE_BUFFERS:
        return "buffers", key
    return OTHER, key


class KeyView(Mapping):
    """A read-only renamed subset of a lazy mapping: values are fetched only when read."""

    def __init__(self, source: Mapping, names: dict[str, str]):
        self._source, self._names = source, names  # new name -> source name

    def __getitem__(self, key: str) -> Any:
        return self._source[self._names[key]]

    def __contains__(self, key: object) -> bool:  # Mapping's default would read the tensor
        return key in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def shape(self, key: str) -> tuple[int, ...]:
        return shape_of(self._source, self._names[key])

    def dtype(self, key: str):
        return dtype_of(self._source, self._names[key])


def shape_of(state_dict: Mapping, key: str) -> tuple[int, ...]:
    """A tensor's shape without reading its data where the mapping allows it."""
    reader = getattr(state_dict, "shape", None)
    if callable(reader):
        return tuple(reader(key))
    value = state_dict[key]
    shape = getattr(value, "shape", None)
    if shape is None:
        raise TypeError(f"{key!r} holds a {type(value).__name__}, not a tensor")
    return tuple(shape)


def dtype_of(state_dict: Mapping, key: str):
    """A tensor's torch dtype without reading its data where the mapping allows it."""
    reader = getattr(state_dict, "dtype", None)
    return reader(key) if callable(reader) else state_dict[key].dtype


def official_key(component: str, key: str) -> str:
    """The full key a prefix-stripped component key has in the official (and SD1.5) layout."""
    if component in ("unet", "temporal"):
        return UNET_PREFIX + key
    if component in ("buffers", OTHER):
        return key
    return PREFIXES[component] + key


def _select(source: Mapping, names: dict[str, str]) -> Mapping:
    # In-memory dicts give dicts of the same objects; lazy files give views that read on demand.
    if isinstance(source, dict):
        return {new: source[old] for new, old in names.items()}
    return KeyView(source, names)


def split_components(state_dict: Mapping, keep_unused: bool = False) -> dict[str, Mapping]:
    """Component -> prefix-stripped state dict, without copying any tensor.

    Accepts the official file (optionally ``state_dict``-wrapped), a plain SD1.5 checkpoint and
    the converter's outputs. Keys outside every component land under ``"other"``. The reference
    net's hint encoder is never used by X-Portrait and is left out unless `keep_unused`.
    """
    meta_component = metadata_of(state_dict).get(COMPONENT_META)
    state_dict = unwrap(state_dict)
    if meta_component and meta_component != BASE:
        names = {k: k for k in state_dict}
        if meta_component == "reference_net" and not keep_unused:
            names = {k: k for k in names if not k.startswith(HINT_BLOCK)}
        return {meta_component: _select(state_dict, names)}
    groups: dict[str, dict[str, str]] = {}
    for key in state_dict:
        component, inner = component_of(key)
        if component == "reference_net" and inner.startswith(HINT_BLOCK) and not keep_unused:
            continue
        groups.setdefault(component, {})[inner] = key
    return {component: _select(state_dict, names) for component, names in groups.items()}


def identify(state_dict: Mapping) -> FileKind:
    """Recognise a file by its keys: official X-Portrait, converted component, plain SD1.5,
    AnimateDiff motion module, ordinary ControlNet, or unknown."""
    if metadata_of(state_dict).get(COMPONENT_META):
        return FileKind.XPORTRAIT_COMPONENT
    keys = list(unwrap(state_dict))
    if any(k.startswith(p) for k in keys for p in
           (PREFIXES["reference_net"], PREFIXES["pose_controlnet"], PREFIXES["local_controlnet"])) \
            or any(k.startswith(UNET_PREFIX) and MOTION_MARKER in k for k in keys):
        return FileKind.XPORTRAIT
    if any(".motion_modules." in k and "temporal_transformer" in k for k in keys):
        return FileKind.ANIMATEDIFF
    if _is_controlnet(keys):
        return FileKind.CONTROLNET
    if any(k.startswith(UNET_PREFIX) for k in keys):
        return FileKind.SD15
    return FileKind.UNKNOWN


def _is_controlnet(keys: Iterable[str]) -> bool:
    keys = list(keys)
    if any(k.startswith("control_model.") for k in keys):
        return True
    if any(k.startswith("controlnet_cond_embedding.") for k in keys):  # diffusers layout
        return True
    return any(k.startswith(HINT_BLOCK) for k in keys) and any(k.startswith("zero_convs.") for k in keys)
