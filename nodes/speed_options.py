"""Speed levers of Apply X-Portrait, each switchable on its own.

Every lever computes what the plain path computes (only rounding differs, see each module's
test). Compiled blocks and CUDA graphs are off by default, and cond and uncond run as separate
passes; every other lever is on. `SpeedOptions` travels as the XPORTRAIT_SPEED socket from the
X-Portrait Speed Options node; Apply X-Portrait without it uses the defaults.
"""
from __future__ import annotations

from dataclasses import dataclass

from .attention_choice import OVERRIDE_OPTION, choose_kernel
from .channels_last import CHANNELS_LAST_OPTION
from .compiled_blocks import COMPILE_OPTION
from .hint_features import REUSE_HINT_FEATURES_OPTION
from .motion_control import REUSE_RESIDUALS_OPTION
from .window_sampling import BATCH_COND_UNCOND_OPTION

#: transformer_options key: whether the temporal modules use the chosen frame-attention kernel.
TEMPORAL_KERNEL_OPTION = "xportrait_temporal_kernel"
#: transformer_options key: whether the temporal modules' frame attention runs as one fused kernel.
FRAME_KERNEL_OPTION = "xportrait_frame_attention_kernel"


@dataclass(frozen=True)
class SpeedOptions:
    """attention_kernels: unpadded attention kernels per head size and a matmul kernel for the
    16-frame temporal attention (CUDA fp16/bf16 only; elsewhere torch's own choice).
    reuse_control_residuals: ControlNet residuals computed once per frame and step, not once per
    window that covers the frame.
    compile_blocks: the blocks of the UNet and the motion ControlNets run compiled by
    torch.compile/inductor (CUDA with Triton and resident weights only; the first run spends
    time compiling). Off by default.
    reuse_hint_features: the ControlNets' hint encoder runs once per frame and run, not in every
    step (it reads no timestep).
    cuda_graphs: window UNet calls and ControlNet batches are recorded once per run as CUDA graphs
    and replayed (CUDA with resident weights and X-Portrait's patches alone; elsewhere the plain
    calls run). Off by default: it pays once compile_blocks has made the GPU faster than Python.
    batch_cond_uncond: the conditional and unconditional passes share one UNet batch when they
    fit. Off by default: they run one after the other, as the official code does, with half the
    activation memory (60 frames at 512 peak at 7.2 GiB instead of 8.3 on an H200, and were not
    slower there).
    channels_last: with compile_blocks, the compiled networks' convolution weights are NHWC for
    the run, so the activations stay NHWC and the compiled blocks convert no layouts (no effect
    without compile_blocks).
    frame_attention_kernel: the temporal modules' 16-frame attention runs as one fused Triton
    kernel (CUDA fp16/bf16 with Triton; elsewhere the attention_kernels choice runs)."""

    attention_kernels: bool = True
    reuse_control_residuals: bool = True
    compile_blocks: bool = False
    reuse_hint_features: bool = True
    cuda_graphs: bool = False
    batch_cond_uncond: bool = False
    channels_last: bool = True
    frame_attention_kernel: bool = True


def apply_speed_options(model, options: SpeedOptions) -> None:
    """Set the levers on a cloned MODEL's transformer_options (seen by every patch and control)."""
    transformer_options = model.model_options.setdefault("transformer_options", {})
    transformer_options[REUSE_RESIDUALS_OPTION] = options.reuse_control_residuals
    transformer_options[TEMPORAL_KERNEL_OPTION] = options.attention_kernels
    transformer_options[FRAME_KERNEL_OPTION] = options.frame_attention_kernel
    transformer_options[COMPILE_OPTION] = options.compile_blocks
    transformer_options[CHANNELS_LAST_OPTION] = options.channels_last
    transformer_options[REUSE_HINT_FEATURES_OPTION] = options.reuse_hint_features
    transformer_options[BATCH_COND_UNCOND_OPTION] = options.batch_cond_uncond
    # An attention override set upstream (another pack's attention patch) is the user's choice: keep it.
    if options.attention_kernels:
        transformer_options.setdefault(OVERRIDE_OPTION, choose_kernel)
    elif transformer_options.get(OVERRIDE_OPTION) is choose_kernel:
        del transformer_options[OVERRIDE_OPTION]
