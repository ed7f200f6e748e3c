"""The global (pose) and local (eye/mouth) motion ControlNets as one ComfyUI control object.

The same object is attached to the positive and the negative conditioning so ComfyUI can batch
both passes in one UNet call; it computes residuals for the conditional rows only and hands the
other rows exact zeros, which leaves the unconditional pass bit-identical to no control (the
official model runs its unconditional pass without ControlNets). Per-frame hints are cut to the
frames of the current window, which the window wrapper publishes in transformer_options.
"""
from __future__ import annotations

import torch

import comfy.controlnet
import comfy.model_patcher
import comfy.utils

from ..xportrait_core.reference_bank import conditional_rows

WINDOW_FRAMES_OPTION = "xportrait_window_frames"


class MotionHints:
    """Driving hints in [-1, 1], channels first: global ``[N,3,H,W]`` and local ``[N,3,H,W]``."""

    def __init__(self, global_hint: torch.Tensor, local_hint: torch.Tensor):
        for name, hint in (("global hint", global_hint), ("local hint", local_hint)):
            if hint.ndim != 4 or hint.shape[1] != 3:
                raise ValueError(f"X-Portrait {name}: expected [frames, 3, H, W], got {list(hint.shape)}")
        if global_hint.shape[0] != local_hint.shape[0]:
            raise ValueError(f"X-Portrait hints: {global_hint.shape[0]} global frames but {local_hint.shape[0]} "
                             "local frames; encode both from the same driving clip")
        self.global_hint = global_hint
        self.local_hint = local_hint

    @property
    def frames(self) -> int:
        return self.global_hint.shape[0]


class XPortraitMotionControl(comfy.controlnet.ControlBase):
    def __init__(self, global_net: comfy.model_patcher.ModelPatcher | None,
                 local_net: comfy.model_patcher.ModelPatcher | None, hints: MotionHints,
                 global_strength: float = 1.0, local_strength: float = 1.0):
        super().__init__()
        self.global_net = global_net
        self.local_net = local_net
        self.hints = hints
        self.global_strength = float(global_strength)
        self.local_strength = float(local_strength)
        self.model_sampling_current = None
        self._sized_hints: dict = {}

    def _active(self):
        pairs = ((self.global_net, self.hints.global_hint, self.global_strength),
                 (self.local_net, self.hints.local_hint, self.local_strength))
        return [(net, hint, s, i) for i, (net, hint, s) in enumerate(pairs) if net is not None and s != 0.0]

    def _hint_frames(self, which: int, hint: torch.Tensor, frames: torch.Tensor, x: torch.Tensor, dtype):
        """The hint frames of this window, resized once per run to 8x the latent size."""
        size = (x.shape[-2] * 8, x.shape[-1] * 8)
        key = (which, size, x.device, dtype)
        if key not in self._sized_hints:
            sized = hint
            if tuple(hint.shape[-2:]) != size:
                sized = comfy.utils.common_upscale(hint, size[1], size[0], "bilinear", "disabled")
            self._sized_hints[key] = sized.to(device=x.device, dtype=dtype)
        sized = self._sized_hints[key]
        if sized.shape[0] == 1:
            return sized.expand(len(frames), -1, -1, -1)
        if int(frames.max()) >= sized.shape[0]:
            raise ValueError(f"X-Portrait motion control: the latent batch has at least {int(frames.max()) + 1} "
                             f"frames but the driving hints have {sized.shape[0]}; make the start latent's "
                             "frame count equal to the driving clip's")
        return sized[frames.to(sized.device)]

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        control_prev = None
        if self.previous_controlnet is not None:
            control_prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options)
        if self.timestep_range is not None and (t[0] > self.timestep_range[0] or t[0] < self.timestep_range[1]):
            return control_prev
        active = self._active()
        cond_or_uncond = transformer_options.get("cond_or_uncond") or [0] * batched_number
        cond_rows, other_rows = conditional_rows(cond_or_uncond, x_noisy.shape[0])
        if not active or cond_rows.numel() == 0:
            return control_prev

        chunk = x_noisy.shape[0] // len(cond_or_uncond)
        frames = transformer_options.get(WINDOW_FRAMES_OPTION)
        frames = torch.arange(chunk) if frames is None else frames.cpu()
        cond_chunks = cond_rows.numel() // chunk
        rows = cond_rows.to(x_noisy.device)
        sampling = self.model_sampling_current
        x = sampling.calculate_input(t[rows], x_noisy[rows])
        timestep = sampling.timestep(t[rows])
        context = cond.get("crossattn_controlnet", cond["c_crossattn"])
        context = context[cond_rows.to(context.device)].to(x_noisy.device)

        total = None
        for net, hint, strength, which in active:
            dtype = getattr(net, "manual_cast_dtype", None) or net.model.dtype
            h = self._hint_frames(which, hint, frames, x, dtype).repeat(cond_chunks, 1, 1, 1)
            out = net.model(x=x.to(dtype), hint=h, timesteps=timestep.to(dtype), context=context.to(dtype))
            residuals = out["output"] + out["middle"]
            if strength != 1.0:
                residuals = [r * strength for r in residuals]
            total = residuals if total is None else [a + b for a, b in zip(total, residuals)]

        if other_rows.numel():
            full = []
            for r in total:
                z = r.new_zeros((x_noisy.shape[0],) + tuple(r.shape[1:]))
                z[rows] = r
                full.append(z)
            total = full
        control = {"middle": total[-1:], "output": total[:-1]}
        return self.control_merge(control, control_prev, output_dtype=None)

    def pre_run(self, model, percent_to_timestep_function):
        super().pre_run(model, percent_to_timestep_function)
        self.model_sampling_current = model.model_sampling

    def cleanup(self):
        self.model_sampling_current = None
        self._sized_hints = {}
        super().cleanup()

    def get_models(self):
        out = super().get_models()
        return out + [n for n in (self.global_net, self.local_net) if n is not None]

    def copy(self):
        c = XPortraitMotionControl(self.global_net, self.local_net, self.hints, self.global_strength,
                                   self.local_strength)
        self.copy_to(c)
        return c
