"""Expected key inventory of every X-Portrait component, derived from the architecture.

The inventory is computed by walking the LDM topology the official YAML builds (UNet,
ControlNet, AutoencoderKL, CLIP text model, AnimateDiff-style temporal modules) with plain
shape arithmetic, so it costs no tensor memory even at full size. Key names are those of the
official checkpoint with the component prefix stripped (see `components.py`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod

Shape = tuple[int, ...]
Inventory = dict[str, Shape]

COMPONENTS = ("unet", "temporal", "reference_net", "pose_controlnet", "local_controlnet", "vae",
              "text_encoder", "buffers")

#: The 13 DDPM buffers LatentDiffusion registers persistently (``lvlb_weights`` is not saved).
SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
                    "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
                    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
                    "logvar")

#: ControlNet hint encoder: fixed widths in the official code, then a conv to model_channels.
HINT_WIDTHS = (16, 16, 32, 32, 96, 96, 256)

TEMPORAL_PE_LENGTH = 24  # motion-module positional encoding max_len
CLIP_VOCAB, CLIP_POSITIONS, CLIP_LAYERS = 49408, 77, 12
HINT_BLOCK = "input_hint_block."


@dataclass(frozen=True)
class XPortraitConfig:
    """The widths that decide every tensor shape of the X-Portrait model."""

    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    context_dim: int = 768
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    num_heads: int = 8  # heads only split widths; listed because the official YAML fixes them
    transformer_depth: int = 1
    in_channels: int = 4
    hint_channels: int = 3
    vae_ch: int = 128
    vae_ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    vae_z_channels: int = 4
    vae_num_res_blocks: int = 2
    text_encoder: bool = True  # the CLIP text model's width is context_dim (768 for ViT-L/14)

    def with_(self, **changes) -> "XPortraitConfig":
        return replace(self, **changes)


FULL = XPortraitConfig()
TINY = XPortraitConfig(model_channels=32, channel_mult=(1, 1, 2, 2), context_dim=32, vae_ch=32,
                       vae_ch_mult=(1, 1, 1, 2), text_encoder=False)


def is_buffer(component: str, key: str) -> bool:
    """Registered buffers (not parameters): they stay float32 on conversion and are not counted."""
    return component == "buffers" or key.endswith("pos_encoder.pe") or key.endswith("position_ids")


def expected_inventory(component: str, config: XPortraitConfig = FULL) -> Inventory:
    """Every key (prefix stripped) and its shape that `component` holds in the official layout."""
    builders = {
        "unet": lambda: _unet(config, with_out=True),
        "temporal": lambda: _temporal(config),
        "reference_net": lambda: {**_unet(config, with_out=False), **_hint_block(config)},
        "pose_controlnet": lambda: _controlnet(config),
        "local_controlnet": lambda: _controlnet(config),
        "vae": lambda: _vae(config),
        "text_encoder": lambda: _clip_text(config) if config.text_encoder else {},
        "buffers": lambda: {name: (1000,) for name in SCHEDULE_BUFFERS},
    }
    if component not in builders:
        raise ValueError(f"unknown X-Portrait component {component!r}; expected one of {', '.join(COMPONENTS)}")
    return builders[component]()


def optional_keys(component: str, config: XPortraitConfig = FULL) -> Inventory:
    """Keys a valid file may hold or lack: the reference net's never-used hint encoder, and the
    CLIP ``position_ids`` buffer that older transformers versions saved."""
    if component == "reference_net":
        return _hint_block(config)
    if component == "text_encoder" and config.text_encoder:
        return {"transformer.text_model.embeddings.position_ids": (1, CLIP_POSITIONS)}
    return {}


def parameter_count(component: str, config: XPortraitConfig = FULL) -> int:
    """Trainable parameters of a component (buffers excluded, as the spec's table counts them)."""
    return sum(prod(shape) for key, shape in expected_inventory(component, config).items()
               if not is_buffer(component, key))


# --- LDM building blocks -------------------------------------------------------------------

def _linear(out: dict, name: str, n_in: int, n_out: int, bias: bool = True) -> None:
    out[f"{name}.weight"] = (n_out, n_in)
    if bias:
        out[f"{name}.bias"] = (n_out,)


def _conv(out: dict, name: str, n_in: int, n_out: int, kernel: int) -> None:
    out[f"{name}.weight"] = (n_out, n_in, kernel, kernel)
    out[f"{name}.bias"] = (n_out,)


def _norm(out: dict, name: str, channels: int) -> None:
    out[f"{name}.weight"] = (channels,)
    out[f"{name}.bias"] = (channels,)


def _resblock(out: dict, name: str, n_in: int, n_out: int, emb: int) -> None:
    _norm(out, f"{name}.in_layers.0", n_in)
    _conv(out, f"{name}.in_layers.2", n_in, n_out, 3)
    _linear(out, f"{name}.emb_layers.1", emb, n_out)
    _norm(out, f"{name}.out_layers.0", n_out)
    _conv(out, f"{name}.out_layers.3", n_out, n_out, 3)
    if n_in != n_out:
        _conv(out, f"{name}.skip_connection", n_in, n_out, 1)


def _attention(out: dict, name: str, width: int, kv_width: int) -> None:
    for proj, n_in in (("to_q", width), ("to_k", kv_width), ("to_v", kv_width)):
        _linear(out, f"{name}.{proj}", n_in, width, bias=False)
    _linear(out, f"{name}.to_out.0", width, width)


def _geglu_ff(out: dict, name: str, width: int) -> None:
    _linear(out, f"{name}.net.0.proj", width, 8 * width)  # GEGLU: value and gate, 4x each
    _linear(out, f"{name}.net.2", 4 * width, width)


def _spatial_transformer(out: dict, name: str, width: int, config: XPortraitConfig) -> None:
    _norm(out, f"{name}.norm", width)
    _conv(out, f"{name}.proj_in", width, width, 1)  # SD1.5 uses 1x1 convs, not linear projections
    for d in range(config.transformer_depth):
        block = f"{name}.transformer_blocks.{d}"
        _attention(out, f"{block}.attn1", width, width)
        _attention(out, f"{block}.attn2", width, config.context_dim)
        _geglu_ff(out, f"{block}.ff", width)
        for n in (1, 2, 3):
            _norm(out, f"{block}.norm{n}", width)
    _conv(out, f"{name}.proj_out", width, width, 1)


def _time_embed(out: dict, config: XPortraitConfig) -> int:
    emb = 4 * config.model_channels
    _linear(out, "time_embed.0", config.model_channels, emb)
    _linear(out, "time_embed.2", emb, emb)
    return emb


def _encoder_half(out: dict, config: XPortraitConfig, emb: int) -> list[int]:
    """input_blocks and middle_block (shared by UNet and ControlNet); returns the skip widths."""
    mc = config.model_channels
    _conv(out, "input_blocks.0.0", config.in_channels, mc, 3)
    skips, width, index, ds = [mc], mc, 1, 1
    for level, mult in enumerate(config.channel_mult):
        for _ in range(config.num_res_blocks):
            _resblock(out, f"input_blocks.{index}.0", width, mult * mc, emb)
            width = mult * mc
            if ds in config.attention_resolutions:
                _spatial_transformer(out, f"input_blocks.{index}.1", width, config)
            skips.append(width)
            index += 1
        if level != len(config.channel_mult) - 1:
            _conv(out, f"input_blocks.{index}.0.op", width, width, 3)
            skips.append(width)
            index += 1
            ds *= 2
    _resblock(out, "middle_block.0", width, width, emb)
    _spatial_transformer(out, "middle_block.1", width, config)
    _resblock(out, "middle_block.2", width, width, emb)
    return skips


def _unet(config: XPortraitConfig, with_out: bool) -> Inventory:
    out: Inventory = {}
    emb = _time_embed(out, config)
    skips = _encoder_half(out, config, emb)
    mc, levels = config.model_channels, len(config.channel_mult)
    width, index, ds = skips[-1], 0, 2 ** (levels - 1)
    for level in reversed(range(levels)):
        for i in range(config.num_res_blocks + 1):
            target = config.channel_mult[level] * mc
            _resblock(out, f"output_blocks.{index}.0", width + skips.pop(), target, emb)
            width, sub = target, 1
            if ds in config.attention_resolutions:
                _spatial_transformer(out, f"output_blocks.{index}.1", width, config)
                sub = 2
            if level and i == config.num_res_blocks:
                _conv(out, f"output_blocks.{index}.{sub}.conv", width, width, 3)
                ds //= 2
            index += 1
    if with_out:
        _norm(out, "out.0", mc)
        _conv(out, "out.2", mc, config.in_channels, 3)
    return out


def _hint_block(config: XPortraitConfig) -> Inventory:
    out: Inventory = {}
    widths = (config.hint_channels, *HINT_WIDTHS, config.model_channels)
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        _conv(out, f"input_hint_block.{2 * i}", n_in, n_out, 3)  # SiLUs sit at the odd indices
    return out


def _controlnet(config: XPortraitConfig) -> Inventory:
    out: Inventory = {}
    emb = _time_embed(out, config)
    out.update(_hint_block(config))
    skips = _encoder_half(out, config, emb)
    for i, width in enumerate(skips):
        _conv(out, f"zero_convs.{i}.0", width, width, 1)
    _conv(out, "middle_block_out.0", skips[-1], skips[-1], 1)
    return out


def temporal_widths(config: XPortraitConfig) -> tuple[list[int], list[int]]:
    """Channels of the 8 input-side and 12 output-side temporal modules."""
    mc, mult, per_level = config.model_channels, config.channel_mult, config.num_res_blocks
    inputs = [m * mc for m in mult for _ in range(per_level)]
    outputs = [m * mc for m in reversed(mult) for _ in range(per_level + 1)]
    return inputs, outputs


def _temporal(config: XPortraitConfig) -> Inventory:
    out: Inventory = {}
    inputs, outputs = temporal_widths(config)
    for side, widths in (("input", inputs), ("output", outputs)):
        for k, c in enumerate(widths):
            name = f"{side}_blocks_motion_module.{k}.0.temporal_transformer"
            _norm(out, f"{name}.norm", c)
            _linear(out, f"{name}.proj_in", c, c)
            block = f"{name}.transformer_blocks.0"
            for a in (0, 1):
                attn = f"{block}.attention_blocks.{a}"
                out[f"{attn}.pos_encoder.pe"] = (1, TEMPORAL_PE_LENGTH, c)
                _attention(out, attn, c, c)
                _norm(out, f"{block}.norms.{a}", c)
            _geglu_ff(out, f"{block}.ff", c)
            _norm(out, f"{block}.ff_norm", c)
            _linear(out, f"{name}.proj_out", c, c)
    return out


def _vae_resblock(out: dict, name: str, n_in: int, n_out: int) -> None:
    _norm(out, f"{name}.norm1", n_in)
    _conv(out, f"{name}.conv1", n_in, n_out, 3)
    _norm(out, f"{name}.norm2", n_out)
    _conv(out, f"{name}.conv2", n_out, n_out, 3)
    if n_in != n_out:
        _conv(out, f"{name}.nin_shortcut", n_in, n_out, 1)


def _vae_mid(out: dict, name: str, width: int) -> None:
    _vae_resblock(out, f"{name}.block_1", width, width)
    _norm(out, f"{name}.attn_1.norm", width)
    for proj in ("q", "k", "v", "proj_out"):
        _conv(out, f"{name}.attn_1.{proj}", width, width, 1)
    _vae_resblock(out, f"{name}.block_2", width, width)


def _vae(config: XPortraitConfig) -> Inventory:
    out: Inventory = {}
    ch, mult, z, blocks = config.vae_ch, config.vae_ch_mult, config.vae_z_channels, config.vae_num_res_blocks
    levels = len(mult)
    _conv(out, "encoder.conv_in", 3, ch, 3)
    width = ch
    for i, m in enumerate(mult):
        for j in range(blocks):
            _vae_resblock(out, f"encoder.down.{i}.block.{j}", width, ch * m)
            width = ch * m
        if i != levels - 1:
            _conv(out, f"encoder.down.{i}.downsample.conv", width, width, 3)
    _vae_mid(out, "encoder.mid", width)
    _norm(out, "encoder.norm_out", width)
    _conv(out, "encoder.conv_out", width, 2 * z, 3)
    _conv(out, "decoder.conv_in", z, width, 3)
    _vae_mid(out, "decoder.mid", width)
    for i in reversed(range(levels)):
        for j in range(blocks + 1):
            _vae_resblock(out, f"decoder.up.{i}.block.{j}", width, ch * mult[i])
            width = ch * mult[i]
        if i != 0:
            _conv(out, f"decoder.up.{i}.upsample.conv", width, width, 3)
    _norm(out, "decoder.norm_out", width)
    _conv(out, "decoder.conv_out", width, 3, 3)
    _conv(out, "quant_conv", 2 * z, 2 * z, 1)
    _conv(out, "post_quant_conv", z, z, 1)
    return out


def _clip_text(config: XPortraitConfig) -> Inventory:
    out: Inventory = {}
    width, root = config.context_dim, "transformer.text_model"
    out[f"{root}.embeddings.token_embedding.weight"] = (CLIP_VOCAB, width)
    out[f"{root}.embeddings.position_embedding.weight"] = (CLIP_POSITIONS, width)
    for layer in range(CLIP_LAYERS):
        name = f"{root}.encoder.layers.{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _linear(out, f"{name}.self_attn.{proj}", width, width)
        _norm(out, f"{name}.layer_norm1", width)
        _linear(out, f"{name}.mlp.fc1", width, 4 * width)
        _linear(out, f"{name}.mlp.fc2", 4 * width, width)
        _norm(out, f"{name}.layer_norm2", width)
    _norm(out, f"{root}.final_layer_norm", width)
    return out
