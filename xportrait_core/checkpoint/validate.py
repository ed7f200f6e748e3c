"""Strict, per-component validation of checkpoint key inventories.

The official loader uses ``strict=False``; this one does not. The widths are read off the
file's own shapes (official SD1.5 sizes, the tiny parity model, or any consistent custom width),
then every component's keys and shapes must equal the architecture's inventory exactly.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from .architecture import FULL, TINY, XPortraitConfig, expected_inventory, optional_keys, temporal_widths
from .components import BASE, COMPONENT_META, OTHER, FileKind, identify, metadata_of, shape_of, split_components
from .errors import CheckpointError

log = logging.getLogger("xportrait")

SHOWN = 10  # examples listed per kind of problem
REQUIRED = ("unet", "temporal", "reference_net", "pose_controlnet", "local_controlnet", "vae", "buffers")
BASE_REQUIRED = ("unet", "vae", "buffers")
OFFICIAL_URL = "https://huggingface.co/fffiloni/X-Portrait"
ADVICE = {
    FileKind.SD15: f"X-Portrait needs its own model_state-415001.th ({OFFICIAL_URL}), which contains an SD1.5 "
                   "backbone.",
    FileKind.ANIMATEDIFF: "X-Portrait's temporal modules are stored inside model_state-415001.th; an AnimateDiff "
                          "motion module cannot stand in for them.",
    FileKind.CONTROLNET: "X-Portrait's global and local motion ControlNets are stored inside model_state-415001.th.",
    FileKind.UNKNOWN: f"Expected model_state-415001.th from {OFFICIAL_URL} or a file written by "
                      "`python -m xportrait_core.convert`.",
}


def detect_config(component: str, state_dict: Mapping) -> XPortraitConfig | None:
    """The widths implied by one component's shapes, or None when its anchor keys are absent."""
    try:
        if component in ("unet", "reference_net", "pose_controlnet", "local_controlnet"):
            return _detect_unet_like(state_dict)
        if component == "temporal":
            return _detect_temporal(state_dict)
        if component == "vae":
            return _detect_vae(state_dict)
        if component == "text_encoder":
            width = shape_of(state_dict, "transformer.text_model.embeddings.token_embedding.weight")[1]
            return _preset(None).with_(context_dim=width)
        return FULL
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
        return None


def validate_component(component: str, state_dict: Mapping, source: str = "",
                       config: XPortraitConfig | None = None) -> XPortraitConfig:
    """Check one prefix-stripped component exactly; returns the widths it was checked against."""
    config, problems = _check(component, state_dict, config)
    if problems:
        raise CheckpointError(f"{source or 'checkpoint'}: {problems}")
    return config


def validate_checkpoint(state_dict: Mapping, source: str = "",
                        components: Iterable[str] | None = None) -> dict[str, XPortraitConfig]:
    """Check a whole file (official, converted base, or one converted component).

    Returns component -> widths for every component checked. The error lists, per component, the
    missing, unexpected and mis-shaped keys and, when the keys say so, what the file is instead.
    """
    kind = identify(state_dict)
    parts = split_components(state_dict, keep_unused=True)
    if components is None:
        components = _required_for(state_dict, kind, parts)
    components = list(components)
    for name in parts:
        if name not in components and name != OTHER and parts[name]:
            components.append(name)
    checked, reports = {}, []
    file_config = _file_config(parts)
    for component in components:
        config, problems = _check(component, parts.get(component, {}), None, file_config)
        checked[component] = config
        if problems:
            reports.append(f"- {problems}")
    warn_about_extras(parts, source)
    reports += _inconsistencies(checked, parts)
    if reports:
        header = f"{source or 'checkpoint'} is not a usable X-Portrait checkpoint"
        if kind not in (FileKind.XPORTRAIT, FileKind.XPORTRAIT_COMPONENT):
            header += f": it looks like {kind.value}. {ADVICE[kind]}"
        raise CheckpointError(header + "\n" + "\n".join(reports))
    return checked


def extras_note(parts: Mapping, source: str = "") -> str | None:
    """The one-line note about keys outside every component, or None when there are none.

    Training left-overs (EMA weights, ``lvlb_weights``, ``scale_factor``, step counters) sit
    outside every network: they are ignored, by the converter and the loader nodes alike.
    """
    keys = sorted(parts.get(OTHER) or ())
    if not keys:
        return None
    return (f"{source or 'checkpoint'}: ignoring {len(keys)} key(s) outside every X-Portrait network "
            f"(training left-overs such as EMA weights): {_examples(keys)}")


def warn_about_extras(parts: Mapping, source: str = "") -> None:
    note = extras_note(parts, source)
    if note:
        log.warning(note)


def _required_for(state_dict: Mapping, kind: FileKind, parts: dict) -> list[str]:
    if kind is not FileKind.XPORTRAIT_COMPONENT:
        return list(REQUIRED)
    if metadata_of(state_dict).get(COMPONENT_META) == BASE:
        return list(BASE_REQUIRED)
    return [p for p in parts if p != OTHER]


def _check(component: str, state_dict: Mapping, config: XPortraitConfig | None,
           file_config: XPortraitConfig = FULL) -> tuple[XPortraitConfig, str]:
    """(widths used, problem text or '') for one component."""
    if config is None:
        config = _best_config(component, state_dict, file_config)
    expected = expected_inventory(component, config)
    optional = optional_keys(component, config)
    allowed = {**expected, **optional}
    missing = [k for k in expected if k not in state_dict and k not in optional]
    unexpected = sorted(k for k in state_dict if k not in allowed)
    misshaped = []
    for key in state_dict:
        if key in allowed:
            try:
                shape = shape_of(state_dict, key)
            except TypeError:
                misshaped.append(f"{key}: holds a {type(state_dict[key]).__name__}, not a tensor")
                continue
            if shape != allowed[key]:
                misshaped.append(f"{key}: file {list(shape)}, expected {list(allowed[key])}")
    if not (missing or unexpected or misshaped):
        return config, ""
    described = _describe(component, config)
    lines = [f"{component} ({described}):" if described else f"{component}:"]
    if missing and not state_dict:
        lines.append(f"missing entirely ({len(missing)} keys, e.g. {_examples(missing, 3)})")
    elif missing:
        lines.append(f"{len(missing)} missing key(s): {_examples(missing)}")
    if unexpected:
        lines.append(f"{len(unexpected)} unexpected key(s): {_examples(unexpected)}")
    if misshaped:
        lines.append(f"{len(misshaped)} key(s) with the wrong shape: {_examples(misshaped)}")
    return config, " ".join(lines)


def _file_config(parts: dict) -> XPortraitConfig:
    """Widths of the whole file, so that an absent component is reported at the file's size."""
    config = FULL
    for component in ("unet", "reference_net", "pose_controlnet", "local_controlnet", "temporal"):
        found = detect_config(component, parts.get(component, {}))
        if found is not None:
            config = found
            break
    vae = detect_config("vae", parts.get("vae", {}))
    if vae is not None:
        config = config.with_(vae_ch=vae.vae_ch, vae_ch_mult=vae.vae_ch_mult, vae_z_channels=vae.vae_z_channels)
    return config.with_(text_encoder=bool(parts.get("text_encoder")))


def _best_config(component: str, state_dict: Mapping, file_config: XPortraitConfig) -> XPortraitConfig:
    """The candidate widths that explain the most keys; a single bad tensor cannot mislead it."""
    candidates = [c for c in (detect_config(component, state_dict), file_config, FULL, TINY) if c is not None]
    if not state_dict:
        return candidates[0]

    def mismatches(config: XPortraitConfig) -> int:
        expected = expected_inventory(component, config)
        allowed = {**expected, **optional_keys(component, config)}
        bad = sum(k not in state_dict for k in expected)
        for key in state_dict:
            try:
                bad += key not in allowed or shape_of(state_dict, key) != allowed[key]
            except TypeError:
                bad += 1
        return bad

    return min(candidates, key=mismatches)


def _inconsistencies(checked: dict[str, XPortraitConfig], parts: dict) -> list[str]:
    """Backbone-width components must agree with each other."""
    widths = {c: (cfg.model_channels, cfg.channel_mult) for c, cfg in checked.items()
              if c in ("unet", "temporal", "reference_net", "pose_controlnet", "local_controlnet") and parts.get(c)}
    if len(set(widths.values())) <= 1:
        return []
    listed = ", ".join(f"{c}: model_channels {w[0]}, channel_mult {list(w[1])}" for c, w in widths.items())
    return [f"- components disagree on the backbone width ({listed}); they come from different models"]


def _widths(component: str, config: XPortraitConfig) -> tuple:
    if component == "vae":
        return config.vae_ch, config.vae_ch_mult, config.vae_z_channels
    return config.model_channels, config.channel_mult, config.context_dim


def _describe(component: str, config: XPortraitConfig) -> str:
    if component == "buffers":
        return ""
    if component == "text_encoder":
        return f"CLIP text model, width {config.context_dim}"
    widths = _widths(component, config)
    if widths == _widths(component, FULL):
        return "official SD1.5 sizes"
    if widths == _widths(component, TINY):
        return "tiny test sizes"
    if component == "vae":
        return f"custom widths: ch {config.vae_ch}, ch_mult {list(config.vae_ch_mult)}"
    return (f"custom widths: model_channels {config.model_channels}, channel_mult {list(config.channel_mult)}, "
            f"context_dim {config.context_dim}")


def _examples(items: list[str], limit: int = SHOWN) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _preset(model_channels: int | None) -> XPortraitConfig:
    return TINY if model_channels == TINY.model_channels else FULL


def _indices(state_dict: Mapping, prefix: str) -> list[int]:
    return sorted({int(k[len(prefix):].split(".", 1)[0]) for k in state_dict if k.startswith(prefix)})


def _detect_unet_like(sd: Mapping) -> XPortraitConfig:
    mc = shape_of(sd, "input_blocks.0.0.weight")[0]
    levels = (_indices(sd, "input_blocks.")[-1] + 1) // 3
    mult = tuple(shape_of(sd, f"input_blocks.{1 + 3 * level}.0.in_layers.2.weight")[0] // mc
                 for level in range(levels))
    context = next((shape_of(sd, k)[1] for k in sd if k.endswith("attn2.to_k.weight")), None)
    config = _preset(mc).with_(model_channels=mc, channel_mult=mult)
    return config.with_(context_dim=context) if context else config


def _detect_temporal(sd: Mapping) -> XPortraitConfig:
    prefix = "input_blocks_motion_module."
    widths = [shape_of(sd, f"{prefix}{k}.0.temporal_transformer.norm.weight")[0]
              for k in _indices(sd, prefix)]
    mc = widths[0]
    config = _preset(mc).with_(model_channels=mc)
    per_level = config.num_res_blocks
    config = config.with_(channel_mult=tuple(w // mc for w in widths[::per_level]))
    if temporal_widths(config)[0] != widths:
        raise ValueError("temporal widths do not follow the UNet levels")
    return config


def _detect_vae(sd: Mapping) -> XPortraitConfig:
    ch = shape_of(sd, "encoder.conv_in.weight")[0]
    levels = _indices(sd, "encoder.down.")
    mult = tuple(shape_of(sd, f"encoder.down.{i}.block.0.conv1.weight")[0] // ch for i in levels)
    z = shape_of(sd, "decoder.conv_in.weight")[1]
    return FULL.with_(vae_ch=ch, vae_ch_mult=mult, vae_z_channels=z)
