"""The global (pose) and local (eye/mouth) motion ControlNets as one ComfyUI control object.

The same object is attached to the positive and the negative conditioning so ComfyUI can batch
both passes in one UNet call; it computes residuals for the conditional rows only and hands the
other rows exact zeros, which leaves the unconditional pass bit-identical to no control (the
official model runs its unconditional pass without ControlNets). Per-frame hints are cut to the
frames of the current window, which the window wrapper publishes in transformer_options.

Residual reuse (a speed lever, on unless the speed options turn it off): within one model call
a frame's residuals are the same in every window that covers it, so they are computed once per
frame and call (see `xportrait_core.residual_reuse`). Hint-feature reuse (also on by default):
the ControlNets' hint encoder runs once per frame and run (see `hint_features`).
"""
from __future__ import annotations

import torch

import comfy.controlnet
import comfy.model_patcher
import comfy.utils

from .controlnet_forward import controlnet_residuals, hint_features, walkable
from .hint_features import REUSE_HINT_FEATURES_OPTION, HintFeatureCache, clip_rows
from .networks import storage_only
from ..xportrait_core.reference_bank import chunk_runs, position_runs, take_rows
from ..xportrait_core.residual_reuse import WindowResidualCache, frames_needed_after

WINDOW_FRAMES_OPTION = "xportrait_window_frames"
#: (model call number, every window of the call, index of the current window)
WINDOW_PLAN_OPTION = "xportrait_window_plan"
#: Frames of the whole clip in this model call (the latent batch before windowing).
CLIP_FRAMES_OPTION = "xportrait_clip_frames"
#: transformer_options key of the CUDA-graph lever (nodes/cuda_graphs.py): the run's recordings.
GRAPHS_OPTION = "xportrait_cuda_graphs"
#: transformer_options: a callable giving the sigma of the call's (with windows: the window's)
#: first row as a host float, set by the window wrapper; it reads the GPU once per model call,
#: and only when called.
HOST_SIGMA_OPTION = "xportrait_host_sigma"
#: transformer_options flag set by Apply X-Portrait's speed options; absent means on.
REUSE_RESIDUALS_OPTION = "xportrait_reuse_control_residuals"
#: Largest whole-clip copy of one hint (sized, in the ControlNet's dtype) kept on the device for
#: a run: 240 frames of 512x512 in fp16 is 360 MiB. Longer clips build each window's hint frames.
#: The same budget bounds each ControlNet's cached hint features (157 MiB at 60 frames in fp16).
HINT_CACHE_BYTES = 512 * 2**20


class MotionHints:
    """The driving clip's hints for the two ControlNets, in [-1, 1], built per frame on request.

    Kept compactly between nodes, so a long clip does not hold extra float copies of itself:
    - from Encode Driving: its DrivingEncoding (the driving frames as given, the alignment and
      the eye/mouth window centres), aligned and turned into hints per window;
    - from hint images: the two IMAGE batches as given;
    - explicit hint tensors [N,3,H,W] (the parity fixture, scripts).
    Each hint frame is computed from its source with the same float operations as a whole-clip
    tensor would be, so the networks see the same numbers (tested).
    """

    def __init__(self, global_hint: torch.Tensor, local_hint: torch.Tensor, _source=None):
        if _source is None:
            for name, hint in (("global hint", global_hint), ("local hint", local_hint)):
                if hint.ndim != 4 or hint.shape[1] != 3:
                    raise ValueError(f"X-Portrait {name}: expected [frames, 3, H, W], got {list(hint.shape)}")
            _source = ("tensors", global_hint, local_hint)
        first, second = _source[1], _source[2]
        if isinstance(second, torch.Tensor) and first.shape[0] != second.shape[0]:
            raise ValueError(f"X-Portrait hints: {first.shape[0]} global frames but {second.shape[0]} "
                             "local frames; encode both from the same driving clip")
        self._source = _source

    @classmethod
    def from_encoding(cls, encoding) -> "MotionHints":
        """Encode Driving's result (xportrait_core.face.driving.DrivingEncoding)."""
        return cls(None, None, ("encoding", encoding.source, encoding))

    @classmethod
    def from_images(cls, aligned: torch.Tensor, local: torch.Tensor) -> "MotionHints":
        """Hint images [N,H,W,C] in [0,1]: aligned frames and eye/mouth hint images."""
        return cls(None, None, ("images", aligned, local))

    @property
    def frames(self) -> int:
        return self._source[1].shape[0]

    def rows(self, which: int, frames) -> torch.Tensor:
        """Hint ``which`` (0 global, 1 local) of ``frames`` (indices): float [k,3,H,W] in [-1,1]."""
        kind, first, second = self._source
        index = torch.as_tensor(frames, dtype=torch.long, device=first.device)
        if kind == "encoding":
            return second.hint_rows(which, index)
        if kind == "tensors":
            return (first, second)[which][index]
        return (first, second)[which][index][..., :3].movedim(-1, 1).float() * 2.0 - 1.0  # "images"

    def preview_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """IMAGE batches [N,S,S,3] in [0,1] of both hints (what the ControlNets are shown)."""
        kind, _, encoding = self._source
        every = range(self.frames)
        # From Encode Driving, both hints come from one alignment of the clip.
        both = encoding.hints(every) if kind == "encoding" else (self.rows(0, every), self.rows(1, every))
        return tuple((hint.movedim(1, -1) + 1) / 2 for hint in both)

    @property
    def global_hint(self) -> torch.Tensor:
        return self.rows(0, range(self.frames))

    @property
    def local_hint(self) -> torch.Tensor:
        return self.rows(1, range(self.frames))


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
        self._reuse = WindowResidualCache()
        self._features = HintFeatureCache()
        self.hint_cache_bytes = HINT_CACHE_BYTES

    def _active(self):
        pairs = ((self.global_net, self.global_strength), (self.local_net, self.local_strength))
        return [(net, s, i) for i, (net, s) in enumerate(pairs) if net is not None and s != 0.0]

    def _sized(self, which: int, frames, size, device, dtype) -> torch.Tensor:
        """Hint frames resized to ``size`` (8x the latent) on ``device``."""
        rows = self.hints.rows(which, frames)
        if tuple(rows.shape[-2:]) != size:
            rows = comfy.utils.common_upscale(rows, size[1], size[0], "bilinear", "disabled")
        if device.type == "cuda":
            rows = rows.pin_memory() if not rows.is_cuda else rows
            return rows.to(device=device, dtype=dtype, non_blocking=True)
        return rows.to(device=device, dtype=dtype)

    def _check_frames(self, frames: torch.Tensor) -> None:
        n = self.hints.frames
        if n > 1 and int(frames.max()) >= n:
            raise ValueError(f"X-Portrait motion control: the latent batch has at least {int(frames.max()) + 1} "
                             f"frames but the driving hints have {n}; make the start latent's "
                             "frame count equal to the driving clip's")

    def _hint_frames(self, which: int, frames: torch.Tensor, x: torch.Tensor, dtype):
        """The hint frames of this window at 8x the latent size on the latent's device.

        A clip whose hints fit HINT_CACHE_BYTES is sized and moved once per run; a longer one is
        built per window from the compact source, so GPU memory does not grow with the clip."""
        size = (x.shape[-2] * 8, x.shape[-1] * 8)
        n = self.hints.frames
        whole_clip = n * 3 * size[0] * size[1] * torch.finfo(dtype).bits // 8
        if n > 1 and whole_clip > self.hint_cache_bytes:
            return self._sized(which, frames.tolist(), size, x.device, dtype)
        key = (which, size, x.device, dtype)
        if key not in self._sized_hints:
            self._sized_hints[key] = self._sized(which, range(n), size, x.device, dtype)
        return clip_rows(self._sized_hints[key], frames.tolist())

    def _known_features(self, net, which: int, frames: torch.Tensor, x: torch.Tensor, dtype, options):
        """This window's hint features from the run's cache (the hint-feature lever), or None."""
        if not options.get(REUSE_HINT_FEATURES_OPTION, True) or not walkable(net.model):
            return None
        size = (x.shape[-2] * 8, x.shape[-1] * 8)
        return self._features.rows(
            (which, size, x.device, dtype), net.model, self.hints.frames, frames.tolist(), tuple(x.shape[-2:]),
            torch.finfo(dtype).bits // 8, self.hint_cache_bytes,
            lambda rows: self._sized(which, rows, size, x.device, dtype),
            lambda hints: hint_features(net.model, hints, options))

    def _residuals(self, active, x, t, frames, context, options) -> list[torch.Tensor]:
        """Summed, strength-scaled residuals of both nets for conditional latents ``x`` (frames ``frames``)."""
        self._check_frames(frames)
        sampling = self.model_sampling_current
        x_in = sampling.calculate_input(t, x)
        timestep = sampling.timestep(t)
        total = None
        for net, strength, which in active:
            dtype = getattr(net, "manual_cast_dtype", None) or net.model.dtype
            if storage_only(dtype):  # fp8 weights: compute in the sampler's dtype
                dtype = x_in.dtype
            features = self._known_features(net, which, frames, x_in, dtype, options)
            h = self._hint_frames(which, frames, x_in, dtype) if features is None else None
            inputs = (x_in.to(dtype), h, timestep.to(dtype), context.to(dtype), features)

            def forward(args, net=net):
                return controlnet_residuals(net.model, args[0], args[1], args[2], args[3], options, args[4])

            graphs = options.get(GRAPHS_OPTION)
            if graphs is not None and walkable(net.model):
                residuals = graphs.controlnet(net.model, forward, inputs, x_in)
            else:
                residuals = forward(inputs)
            if strength != 1.0:
                residuals = [r * strength for r in residuals]
            total = residuals if total is None else [a + b for a, b in zip(total, residuals)]
        return total

    def _reused_residuals(self, active, x, t, frames, context, plan, options) -> list[torch.Tensor]:
        """Residuals of one window, computing only the frames no earlier window of the call did."""
        call, windows, index = plan
        self._reuse.begin(call)
        window = frames.tolist()
        fresh_at = self._reuse.missing(window)
        fresh = None
        if fresh_at:
            runs = position_runs(fresh_at)
            fresh = self._residuals(active, take_rows(x, runs), take_rows(t, runs), frames[fresh_at],
                                    take_rows(context, runs), options)
        return self._reuse.assemble(window, fresh_at, fresh, frames_needed_after(windows, index))

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        control_prev = None
        if self.previous_controlnet is not None:
            control_prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options)
        if self.timestep_range is not None and self._outside_range(t, transformer_options):
            return control_prev
        active = self._active()
        cond_or_uncond = transformer_options.get("cond_or_uncond") or [0] * batched_number
        runs = chunk_runs(cond_or_uncond, x_noisy.shape[0])
        if not active or not any(is_cond for _, is_cond in runs):
            return control_prev

        chunk = x_noisy.shape[0] // len(cond_or_uncond)
        clip = transformer_options.get(CLIP_FRAMES_OPTION)
        if clip is not None and self.hints.frames not in (1, clip):
            raise ValueError(f"X-Portrait motion control: the start latent has {clip} frames but the driving hints "
                             f"have {self.hints.frames}; make the start latent with X-Portrait Start Latent from the "
                             "same driving clip, or cut the driving clip to the latent's length")
        frames = transformer_options.get(WINDOW_FRAMES_OPTION)
        frames = torch.arange(chunk) if frames is None else frames.cpu()
        # Slices, not index tensors: no host-to-device copy (and so no GPU sync) per window.
        cond_slices = [rows for rows, is_cond in runs if is_cond]
        context = cond.get("crossattn_controlnet", cond["c_crossattn"]).to(x_noisy.device)
        x, t_cond, context = (take_rows(v, cond_slices) for v in (x_noisy, t, context))
        cond_chunks = x.shape[0] // chunk

        plan = transformer_options.get(WINDOW_PLAN_OPTION)
        if plan is not None and cond_chunks == 1 and transformer_options.get(REUSE_RESIDUALS_OPTION, True):
            total = self._reused_residuals(active, x, t_cond, frames, context, plan, transformer_options)
        else:
            total = self._residuals(active, x, t_cond, frames.repeat(cond_chunks), context, transformer_options)

        if len(runs) > 1 or not runs[0][1]:
            total = [self._spread(r, runs) for r in total]
        control = {"middle": total[-1:], "output": total[:-1]}
        return self.control_merge(control, control_prev, output_dtype=None)

    def _outside_range(self, t: torch.Tensor, transformer_options: dict) -> bool:
        """ComfyUI's start/end percent check on t[0]. At 0% to 100% ComfyUI's bounds are sigmas
        no schedule reaches, so nothing is read. Otherwise reading t[0] from the GPU in every
        window would drain its queue each time: the window wrapper's host sigma (read once per
        model call) is compared instead, as a tensor of t's dtype so it rounds as ComfyUI's does."""
        start, end = self.timestep_percent_range
        if start <= 0.0 and end >= 1.0:
            return False
        sigma = transformer_options.get(HOST_SIGMA_OPTION)
        first = t[0] if sigma is None else torch.tensor(sigma(), dtype=t.dtype)
        return bool(first > self.timestep_range[0] or first < self.timestep_range[1])

    @staticmethod
    def _spread(residual: torch.Tensor, runs) -> torch.Tensor:
        """Conditional rows back in batch order, exact zeros for the other chunks."""
        pieces, taken = [], 0
        for rows, is_cond in runs:
            n = rows.stop - rows.start
            if is_cond:
                pieces.append(residual[taken:taken + n])
                taken += n
            else:
                pieces.append(residual.new_zeros((n,) + tuple(residual.shape[1:])))
        return torch.cat(pieces)

    def pre_run(self, model, percent_to_timestep_function):
        super().pre_run(model, percent_to_timestep_function)
        self.model_sampling_current = model.model_sampling

    def cleanup(self):
        self.model_sampling_current = None
        self._sized_hints = {}
        self._reuse.clear()
        self._features.clear()
        super().cleanup()

    def get_models(self):
        out = super().get_models()
        return out + [n for n in (self.global_net, self.local_net) if n is not None]

    def copy(self):
        c = XPortraitMotionControl(self.global_net, self.local_net, self.hints, self.global_strength,
                                   self.local_strength)
        c.hint_cache_bytes = self.hint_cache_bytes
        self.copy_to(c)
        return c
