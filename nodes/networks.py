"""Build ComfyUI-managed networks from X-Portrait component state dicts.

Every X-Portrait network shares the SD1.5 UNet topology, so one detected UNet config serves the
generation UNet, the reference net and both ControlNets (also for the tiny test models). Each
network is wrapped in a ModelPatcher so ComfyUI's memory manager loads and offloads it.
"""
from __future__ import annotations

import torch

import comfy.cldm.cldm
import comfy.model_detection
import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.sd
import comfy.supported_models
import comfy.utils
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from ..xportrait_core.temporal import TemporalModuleSet
from .comfy_compat import core_model_patcher, set_inference_dtype

WEIGHT_DTYPES = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32,
                 "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn}
#: fp8 is a storage dtype: each layer casts its weights to the compute dtype ComfyUI picks for
#: the device (fp16 on GPUs, fp32 on the CPU) as it runs. The "_fast" choice also lets ComfyUI
#: multiply the Linear layers in fp8 (scaled matmul) where the GPU supports it (Ada, Hopper, newer).
FP8_MATMUL = frozenset({"fp8_e4m3fn_fast"})
WEIGHT_DTYPE_TOOLTIP = ("Weight dtype on the GPU. auto lets ComfyUI choose (fp16 on NVIDIA GPUs from Volta on, AMD and "
                        "Apple GPUs; fp32 on the CPU and older GPUs); fp32 reproduces the official numbers at 2x the "
                        "memory of fp16. fp8_e4m3fn halves the weights' memory again (about 3 GiB for all networks) "
                        "at a visible loss of precision; fp8_e4m3fn_fast also multiplies in fp8 on Ada/Hopper GPUs.")


def storage_only(dtype: torch.dtype) -> bool:
    """True for dtypes that hold weights but are never computed in (the fp8 formats)."""
    return dtype.is_floating_point and dtype.itemsize == 1


def sd15_model_config(unet_like_sd: dict) -> comfy.supported_models.SD15:
    """SD1.5 model config (with SD1.5's 8-heads rule) detected from UNet-shaped weights."""
    detected = comfy.model_detection.detect_unet_config(unet_like_sd, "")
    return comfy.supported_models.SD15(detected)


def _chosen_dtype(weight_dtype: str) -> torch.dtype | None:
    """The dtype a `weight_dtype` choice names (None for auto)."""
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype '{weight_dtype}' is not one of {sorted(WEIGHT_DTYPES)}")
    return WEIGHT_DTYPES[weight_dtype]


def _dtypes(sd: dict, weight_dtype: str, supported) -> tuple[torch.device, torch.dtype, object]:
    load_device = mm.get_torch_device()
    dtype = _chosen_dtype(weight_dtype)
    if dtype is None:
        dtype = mm.unet_dtype(model_params=comfy.utils.calculate_parameters(sd), supported_dtypes=list(supported),
                              weight_dtype=comfy.utils.weight_dtype(sd))
    manual_cast = mm.unet_manual_cast(dtype, load_device, supported)
    return load_device, dtype, manual_cast


def _strict_load(module: torch.nn.Module, sd: dict, what: str) -> None:
    missing, unexpected = module.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{what}: weights do not fit the detected architecture; missing {sorted(missing)[:8]}"
                         f" ({len(missing)}), unexpected {sorted(unexpected)[:8]} ({len(unexpected)})")


def build_base_model(unet_sd: dict, weight_dtype: str = "auto") -> comfy.model_patcher.ModelPatcher:
    """The generation UNet as a ComfyUI SD1.5 MODEL (eps, scaled-linear schedule)."""
    model_config = sd15_model_config(unet_sd)
    supported = model_config.supported_inference_dtypes
    load_device, dtype, manual_cast = _dtypes(unet_sd, weight_dtype, supported)
    set_inference_dtype(model_config, dtype, manual_cast, load_device)
    model_config.optimizations["fp8"] = weight_dtype in FP8_MATMUL  # ComfyUI's fp8-matmul layers
    model = model_config.get_model(unet_sd, "")
    patcher = core_model_patcher()(model, load_device=load_device,
                                    offload_device=mm.unet_offload_device())
    _strict_load(model.diffusion_model, model_config.process_unet_state_dict(dict(unet_sd)), "generation UNet")
    return patcher


def _operations(dtype: torch.dtype, manual_cast, load_device, weight_dtype: str):
    """ComfyUI's layer classes for these weights: casting layers where weights and compute differ,
    and its fp8-matmul layers for the "_fast" choice on GPUs that support them."""
    return comfy.ops.pick_operations(dtype, manual_cast, load_device=load_device,
                                     fp8_optimizations=weight_dtype in FP8_MATMUL)


def _unet_kwargs(sd: dict, dtype: torch.dtype, manual_cast, load_device, weight_dtype: str) -> dict:
    config = dict(sd15_model_config(sd).unet_config)
    config.update(dtype=dtype, device=mm.unet_offload_device(),
                  operations=_operations(dtype, manual_cast, load_device, weight_dtype))
    return config


def build_reference_net(ref_sd: dict, weight_dtype: str = "auto") -> comfy.model_patcher.ModelPatcher:
    """The appearance net: an SD1.5 UNet whose `out` head is never used (the bank is all we read).

    Its `input_hint_block` is unused by X-Portrait and is dropped here.
    """
    sd = {k: v for k, v in ref_sd.items() if not k.startswith("input_hint_block.")}
    load_device, dtype, manual_cast = _dtypes(sd, weight_dtype, (torch.float16, torch.bfloat16, torch.float32))
    net = UNetModel(**_unet_kwargs(sd, dtype, manual_cast, load_device, weight_dtype))
    net.out = torch.nn.Identity()
    _strict_load(net, sd, "reference net")
    net.eval()
    patcher = core_model_patcher()(net, load_device=load_device, offload_device=mm.unet_offload_device())
    patcher.compute_dtype = manual_cast or dtype  # what its inputs are cast to (never fp8)
    return patcher


def build_controlnet(control_sd: dict, weight_dtype: str = "auto") -> comfy.model_patcher.ModelPatcher:
    """An LDM ControlNet (3-channel hint) wrapped for ComfyUI's memory manager."""
    load_device, dtype, manual_cast = _dtypes(control_sd, weight_dtype, (torch.float16, torch.bfloat16, torch.float32))
    config = _unet_kwargs(control_sd, dtype, manual_cast, load_device, weight_dtype)
    for key in ("out_channels", "transformer_depth_output"):
        config.pop(key, None)
    config["hint_channels"] = control_sd["input_hint_block.0.weight"].shape[1]
    net = comfy.cldm.cldm.ControlNet(**config)
    _strict_load(net, control_sd, "motion ControlNet")
    net.eval()
    patcher = core_model_patcher()(net, load_device=load_device, offload_device=mm.unet_offload_device())
    patcher.manual_cast_dtype = manual_cast
    return patcher


def build_temporal_modules(temporal_sd: dict, weight_dtype: str = "auto") -> comfy.model_patcher.ModelPatcher:
    """The 20 temporal modules, built from ComfyUI's casting layers so that its memory manager
    can stream them layer by layer when the GPU cannot hold every network (--lowvram, small cards).

    The module set adopts the given tensors; pass copies if they must not be shared.
    """
    dtype = _chosen_dtype(weight_dtype) or mm.unet_dtype()
    load_device = mm.get_torch_device()
    if not storage_only(dtype):
        modules = TemporalModuleSet.from_state_dict(temporal_sd, operations=comfy.ops.disable_weight_init)
        modules = modules.to(dtype=dtype).eval()
    else:
        # fp8: casting layers, and only the weights are stored in fp8; the position tables stay
        # exact. The modules then compute in the UNet's dtype (see temporal_injection).
        ops = _operations(dtype, mm.unet_manual_cast(dtype, load_device), load_device, weight_dtype)
        modules = TemporalModuleSet.from_state_dict(temporal_sd, operations=ops).eval()
        for parameter in modules.parameters():
            parameter.data = parameter.data.to(dtype)
    return core_model_patcher()(modules, load_device=load_device, offload_device=mm.unet_offload_device())


def _vae_ddconfig(vae_sd: dict) -> dict:
    """The LDM AutoencoderKL config read off the weights' shapes (official or tiny widths)."""
    ch = vae_sd["encoder.conv_in.weight"].shape[0]
    levels = 1 + max(int(k.split(".")[2]) for k in vae_sd if k.startswith("encoder.down."))
    ch_mult = [vae_sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in range(levels)]
    blocks = 1 + max(int(k.split(".")[4]) for k in vae_sd if k.startswith("encoder.down.0.block."))
    return {"double_z": True, "z_channels": vae_sd["decoder.conv_in.weight"].shape[1], "resolution": 256,
            "in_channels": 3, "out_ch": 3, "ch": ch, "ch_mult": ch_mult, "num_res_blocks": blocks,
            "attn_resolutions": [], "dropout": 0.0}


#: Frames per VAE decode call: the official pipeline's chunk. Decoding 16 frames of 512x512
#: takes 8.6 GiB and 0.17 s on an H200, 60 frames at once 25 GiB and 0.63 s: the same speed
#: for a third of the peak.
DECODE_CHUNK = 16


class ChunkedDecodeVAE(comfy.sd.VAE):
    """ComfyUI's VAE, decoding a long latent batch in chunks of at most DECODE_CHUNK frames.

    ComfyUI sizes one decode batch from free memory and its per-frame estimate (1.06 GiB for a
    64x64 latent, twice the measured 0.54 GiB, so on any card it stays safe); on a large GPU
    that batch is the whole clip. Chunks bound the peak without costing time. (The earlier
    "out of memory, then tiled" decode on the H200 came from the benchmark decoding outside
    inference mode, where autograd kept every activation; ComfyUI's executor never does that.)
    """

    def decode(self, samples_in, vae_options=None):
        vae_options = vae_options or {}
        if samples_in.shape[0] <= DECODE_CHUNK:
            return super().decode(samples_in, vae_options)
        return torch.cat([super(ChunkedDecodeVAE, self).decode(chunk, vae_options)
                          for chunk in samples_in.split(DECODE_CHUNK)])


def build_vae(vae_sd: dict) -> comfy.sd.VAE:
    """ComfyUI VAE from LDM `first_stage_model.*` weights (prefix stripped), any width."""
    params = {"ddconfig": _vae_ddconfig(vae_sd), "embed_dim": vae_sd["post_quant_conv.weight"].shape[1]}
    return ChunkedDecodeVAE(sd=dict(vae_sd), config={"params": params})
