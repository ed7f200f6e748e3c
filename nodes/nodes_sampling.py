"""Sampling nodes: patch the MODEL, attach motion control, build the start latent."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..xportrait_core.finite_inputs import require_finite
from ..xportrait_core.reference_bank import REFERENCE_MODES

from .motion_control import MotionHints, XPortraitMotionControl
from .speed_options import SpeedOptions
from .types import Driving, MotionControlNet, ReferenceNet, Speed, TemporalModules
from .window_sampling import WINDOW_MODES, WindowOptions, parse_offsets
from .xportrait_patch import apply_xportrait, encode_references

CATEGORY = "X-Portrait"
#: The official model's working size (its training resolution).
WORKING_SIZE = 512


class ApplyXPortrait(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitApply", display_name="Apply X-Portrait", category=CATEGORY,
            description="Patches a MODEL with X-Portrait's temporal modules, reference attention to the portrait and "
                        "frame windows. Sample it with any KSampler; the patch is removed after sampling.",
            inputs=[
                io.Model.Input("model", tooltip="The SD1.5 base model (from Load X-Portrait Base Model)."),
                TemporalModules.Input("temporal_modules", tooltip="From Load X-Portrait Temporal Modules."),
                ReferenceNet.Input("reference_net", tooltip="From Load X-Portrait Reference Net."),
                io.Vae.Input("vae", tooltip="Encodes the reference image(s)."),
                io.Image.Input("reference_image", tooltip="The portrait (512x512 is the official size). A batch of "
                               "several images gives several references (see reference_mode)."),
                io.Float.Input("reference_strength", default=1.0, min=0.0, max=2.0, step=0.01,
                               tooltip="1.0 = official; 0 = no reference attention (identity is lost)."),
                io.Combo.Input("window_mode", options=list(WINDOW_MODES), default="official",
                               tooltip="official: X-Portrait's circular windows with a seeded random offset each step. "
                                       "sliding: fixed windows blended across overlaps (steadier on long clips). "
                                       "off: all frames in one pass (at most 24)."),
                io.Int.Input("window_length", default=16, min=1, max=24,
                             tooltip="Frames per window (16 = official, the temporal modules' training length)."),
                io.Int.Input("window_overlap", default=4, min=0, max=23,
                             tooltip="Frames shared by neighbouring windows (4 = official)."),
                io.Combo.Input("reference_mode", options=list(REFERENCE_MODES), default="shared", optional=True,
                               tooltip="shared: every frame attends to all reference images (their banks are "
                                       "joined). per frame: reference i drives frame i, as X-Portrait does with a "
                                       "reference video; needs one reference per driving frame (or one)."),
                io.String.Input("window_offsets", default="", optional=True, advanced=True,
                                tooltip="Pin the official window offset of each step, e.g. '17,3,11,21' (cycled); "
                                        "empty = a random offset per step from the sampler seed (official)."),
                Speed.Input("speed_options", optional=True,
                            tooltip="From X-Portrait Speed Options. Unconnected: every speed lever on (they "
                                    "compute the same result, only faster)."),
            ],
            outputs=[io.Model.Output(tooltip="The patched MODEL: sample it with KSampler or SamplerCustom.")])

    @classmethod
    def execute(cls, model, temporal_modules, reference_net, vae, reference_image, reference_strength,
                window_mode, window_length, window_overlap, reference_mode="shared", window_offsets="",
                speed_options=None) -> io.NodeOutput:
        windows = WindowOptions(window_mode, window_length, window_overlap, parse_offsets(window_offsets))
        latents = encode_references(vae, model, reference_image)
        patched = apply_xportrait(model, temporal_modules, reference_net, latents, reference_strength, windows,
                                  speed_options, reference_mode)
        h, w = reference_image.shape[1:3]
        if (h, w) == (WORKING_SIZE, WORKING_SIZE):
            return io.NodeOutput(patched)
        note = (f"The portrait is {w}x{h}; X-Portrait was trained at {WORKING_SIZE}x{WORKING_SIZE}, and the video is "
                f"sampled at the portrait's size. For a large or non-square portrait use X-Portrait Crop Face "
                f"(size {WORKING_SIZE}) and Paste Back.")
        return io.NodeOutput(patched, ui=ui.PreviewText(note))


class SpeedSettings(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitSpeedOptions", display_name="X-Portrait Speed Options", category=CATEGORY,
            description="Switches Apply X-Portrait's speed levers one by one, to compare or to work around a "
                        "driver problem. Each lever computes the same result as the plain path.",
            inputs=[
                io.Boolean.Input("attention_kernels", default=True,
                                 tooltip="Unpadded attention kernels for X-Portrait's head sizes (cuDNN on Hopper) "
                                         "and a matmul kernel for the 16-frame temporal attention. GPU fp16/bf16 "
                                         "only; elsewhere ComfyUI's own attention runs."),
                io.Boolean.Input("reuse_control_residuals", default=True,
                                 tooltip="Run the motion ControlNets once per frame and step instead of once per "
                                         "window that covers the frame (a quarter less ControlNet work at 16/4)."),
                io.Boolean.Input("compile_blocks", default=False, optional=True,
                                 tooltip="Run the blocks of the UNet and the motion ControlNets compiled by "
                                         "torch.compile (fused GPU kernels). "
                                         "Needs an NVIDIA GPU with Triton and the whole model on the GPU; "
                                         "elsewhere it does nothing. The first run compiles for a minute or "
                                         "more; later runs in the same session are faster. Results match the "
                                         "plain path to fp16 rounding."),
                io.Boolean.Input("reuse_hint_features", default=True, optional=True,
                                 tooltip="Encode each driving frame's hints for the motion ControlNets once per run "
                                         "instead of in every step (their hint encoder ignores the timestep). "
                                         "Keeps up to 512 MiB per ControlNet on the GPU; longer clips encode "
                                         "per window."),
                io.Boolean.Input("cuda_graphs", default=False, optional=True,
                                 tooltip="Record each window's UNet call and each ControlNet batch once per run "
                                         "as a CUDA graph and replay it, so the GPU no longer waits for Python to "
                                         "launch thousands of kernels. Pays together with compile_blocks. Used "
                                         "only on an NVIDIA GPU with every weight on it and no other pack "
                                         "patching the UNet; otherwise the plain calls run. Keeps one window's "
                                         "activations reserved on the GPU for the run."),
                io.Boolean.Input("batch_cond_uncond", default=False, optional=True,
                                 tooltip="On: the conditional and unconditional passes of a window share one "
                                         "UNet batch when they fit. Off (default): they run one after the other, "
                                         "as the official code does, with half the activation memory and the "
                                         "same result; on an H200 that was also the faster setting."),
                io.Boolean.Input("channels_last", default=True, optional=True,
                                 tooltip="With compile_blocks: the compiled networks' convolution weights are laid "
                                         "out channels-last (NHWC) for the run, so the compiled blocks convert no "
                                         "layouts (about 8-20% faster ResBlocks on an H200). The weights are put "
                                         "back after the run. No effect without compile_blocks."),
                io.Boolean.Input("frame_attention_kernel", default=True, optional=True,
                                 tooltip="Run the temporal modules' attention across the 16 frames of a window as "
                                         "one fused GPU kernel (Triton) instead of two batched matmuls and a "
                                         "softmax. NVIDIA GPU, fp16/bf16 and Triton only; elsewhere the "
                                         "attention_kernels choice runs. Same result to fp16 rounding."),
            ],
            outputs=[Speed.Output(display_name="speed_options", tooltip="Connect to Apply X-Portrait.")])

    @classmethod
    def execute(cls, attention_kernels, reuse_control_residuals, compile_blocks=False,
                reuse_hint_features=True, cuda_graphs=False, batch_cond_uncond=False,
                channels_last=True, frame_attention_kernel=True) -> io.NodeOutput:
        return io.NodeOutput(SpeedOptions(attention_kernels, reuse_control_residuals, compile_blocks,
                                          reuse_hint_features, cuda_graphs, batch_cond_uncond, channels_last,
                                          frame_attention_kernel))


class MotionControl(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitMotionControl", display_name="X-Portrait Motion Control", category=CATEGORY,
            description="Drives the conditional pass with the motion and local ControlNets. Connect both "
                        "conditionings: the unconditional pass gets no control (as in X-Portrait) but can still be "
                        "batched with the conditional one.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="Positive conditioning (X-Portrait uses the empty prompt)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning; passes through without control."),
                MotionControlNet.Input("motion_controlnet", tooltip="From Load X-Portrait Motion ControlNet."),
                MotionControlNet.Input("local_controlnet", tooltip="From Load X-Portrait Local ControlNet."),
                Driving.Input("driving", tooltip="Encoded driving frames (aligned frames and eye/mouth hints)."),
                io.Float.Input("motion_strength", default=1.0, min=0.0, max=2.0, step=0.01,
                               tooltip="Global motion ControlNet strength; 1.0 = official, 0 = off."),
                io.Float.Input("local_strength", default=1.0, min=0.0, max=2.0, step=0.01,
                               tooltip="Eye/mouth ControlNet strength; 1.0 = official, 0 = off."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress at which control starts."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress at which control stops."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive", tooltip="Positive conditioning with the motion "
                                            "control attached: connect to the sampler."),
                     io.Conditioning.Output(display_name="negative", tooltip="Negative conditioning (no control "
                                            "in its pass): connect to the sampler.")])

    @classmethod
    def execute(cls, positive, negative, motion_controlnet, local_controlnet, driving, motion_strength,
                local_strength, start_percent, end_percent) -> io.NodeOutput:
        if start_percent > end_percent:
            raise ValueError(f"start_percent {start_percent} is after end_percent {end_percent}; swap them")
        control = XPortraitMotionControl(motion_controlnet, local_controlnet, driving, motion_strength, local_strength)
        control.timestep_percent_range = (start_percent, end_percent)
        out = []
        for conditioning in (positive, negative):
            attached = []
            for tensor, options in conditioning:
                options = options.copy()
                previous = options.get("control")
                this = control if previous is None else control.copy().set_previous_controlnet(previous)
                this.timestep_percent_range = (start_percent, end_percent)
                options["control"] = this
                options["control_apply_to_uncond"] = False
                attached.append([tensor, options])
            out.append(attached)
        return io.NodeOutput(out[0], out[1])


class DrivingFromImages(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitDrivingFromImages", display_name="X-Portrait Driving From Hint Images",
            category=CATEGORY,
            description="Builds the driving input from frames that are already aligned to the portrait and their "
                        "eye/mouth hint images (black outside the three patches).",
            inputs=[
                io.Image.Input("aligned_frames", tooltip="Driving frames aligned to the portrait, [N,H,W,3] in 0..1."),
                io.Image.Input("local_hints", tooltip="Eye/mouth hint images, [N,H,W,3], black outside the patches."),
            ],
            outputs=[Driving.Output(display_name="driving", tooltip="Connect to Motion Control and Start Latent.")])

    @classmethod
    def execute(cls, aligned_frames, local_hints) -> io.NodeOutput:
        require_finite(aligned_frames, "aligned_frames", "check the node that made the aligned driving frames")
        require_finite(local_hints, "local_hints", "check the node that made the eye/mouth hint images")
        if aligned_frames.shape[0] != local_hints.shape[0]:
            raise ValueError(f"X-Portrait Driving From Hint Images: {aligned_frames.shape[0]} aligned frames but "
                             f"{local_hints.shape[0]} local hint images; give one hint image per frame")
        return io.NodeOutput(MotionHints.from_images(aligned_frames, local_hints))


class StartLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitStartLatent", display_name="X-Portrait Start Latent", category=CATEGORY,
            description="The portrait's latent repeated once per driving frame. Sampled at denoise 1.0 this is "
                        "X-Portrait's start (a little of the portrait under full noise), not pure noise.",
            inputs=[
                io.Vae.Input("vae", tooltip="Encodes the portrait."),
                io.Image.Input("source_image", tooltip="The portrait (first image of the batch is used)."),
                Driving.Input("driving", tooltip="Sets the number of frames."),
            ],
            outputs=[io.Latent.Output(tooltip="One portrait latent per driving frame: connect to the sampler at "
                                      "denoise 1.0.")])

    @classmethod
    def execute(cls, vae, source_image, driving) -> io.NodeOutput:
        require_finite(source_image[:1, :, :, :3], "source_image", "check the image loader or the node that made it")
        latent = vae.encode(source_image[:1, :, :, :3])
        return io.NodeOutput({"samples": latent.repeat(driving.frames, 1, 1, 1)})


SAMPLING_NODES = [ApplyXPortrait, SpeedSettings, MotionControl, DrivingFromImages, StartLatent]
