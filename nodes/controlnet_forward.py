"""The motion ControlNets' forward pass, run by the pack with the sampling run's options.

ComfyUI's LDM ControlNet (`comfy.cldm.cldm.ControlNet.forward`) calls its blocks without
`transformer_options`, so its attention never sees an `optimized_attention_override`: the pack's
kernel choice is ignored and head size 40 takes torch's padded FlashAttention-2 kernel (4.7% of
a compiled step on an H200, bench/sampling_speed.py --profile). Walking the same modules in the
same order here hands the options to every transformer block and lets the compile lever
install compiled blocks; with the same attention function it is bit-identical to the module's
own forward (tested). ControlNets this walk does not cover (union types, class labels) run
their own forward.
"""
from __future__ import annotations

import torch

from comfy.ldm.modules.diffusionmodules.util import timestep_embedding

from .attention_choice import OVERRIDE_OPTION
from .compiled_blocks import COMPILED_TYPES, compile_on, compiled_while


def walkable(net: torch.nn.Module) -> bool:
    """A plain LDM ControlNet: no union control types, no class embedding."""
    return getattr(net, "control_add_embedding", None) is None and getattr(net, "num_classes", None) is None


def controlnet_blocks(net: torch.nn.Module):
    """What the compile lever compiles: the hint encoder and every ResBlock, transformer and
    Downsample of the input and middle blocks (the 1x1 zero convolutions gain nothing)."""
    yield net.input_hint_block
    for block in [*net.input_blocks, net.middle_block]:
        for layer in block:
            if isinstance(layer, COMPILED_TYPES):
                yield layer


def hint_features(net: torch.nn.Module, hint: torch.Tensor, transformer_options: dict) -> torch.Tensor:
    """The hint encoder's output for hint frames [k,3,H,W] (it reads neither timestep nor text)."""
    with compiled_while(compile_on(transformer_options), net, [net.input_hint_block], hint.device):
        return net.input_hint_block(hint, None, None)


def controlnet_residuals(net: torch.nn.Module, x: torch.Tensor, hint: torch.Tensor | None, timesteps: torch.Tensor,
                         context: torch.Tensor, transformer_options: dict,
                         features: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The 13 residuals (12 skip connections, then the middle block) of one ControlNet.

    ``transformer_options`` are the sampling run's; only the attention override and the
    compile switch are passed on (the ControlNet runs no other patch, as in ComfyUI).
    ``features``: the hint encoder's output for these frames when already known (then ``hint``
    is not read; walkable nets only)."""
    if not walkable(net):
        out = net(x=x, hint=hint, timesteps=timesteps, context=context)
        return out["output"] + out["middle"]
    options = {k: transformer_options[k] for k in (OVERRIDE_OPTION,) if k in transformer_options}
    with compiled_while(compile_on(transformer_options), net, controlnet_blocks(net), x.device):
        emb = net.time_embed(timestep_embedding(timesteps, net.model_channels, repeat_only=False).to(x.dtype))
        guided_hint = net.input_hint_block(hint, emb, context) if features is None else features
        residuals, h = [], x
        for index, (block, zero_conv) in enumerate(zip(net.input_blocks, net.zero_convs)):
            h = block(h, emb, context, transformer_options=dict(options))
            if index == 0:
                h += guided_hint
            residuals.append(zero_conv(h, emb, context))
        h = net.middle_block(h, emb, context, transformer_options=dict(options))
        residuals.append(net.middle_block_out(h, emb, context))
    return residuals
