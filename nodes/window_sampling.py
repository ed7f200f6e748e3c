"""Frame windows ("prompt travelling") as ComfyUI sampling wrappers.

A CALC_COND_BATCH wrapper splits the clip into 16-frame windows, runs ComfyUI's own cond/uncond
batching on each window and averages the per-frame predictions (denoised = x - sigma * eps is
affine in eps, so averaging it equals the official averaging of eps). An OUTER_SAMPLE wrapper
seeds the per-step window offsets from the sampler seed, so a run reproduces, and clears
per-run caches in `finally`, so a failed or cancelled run leaves nothing behind.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
from comfy.patcher_extension import WrappersMP

from ..xportrait_core.finite_inputs import require_finite
from ..xportrait_core.host_values import ReadWhenAsked, to_device
from ..xportrait_core.windows import WindowPlan, average_over_windows

from .device_conds import DeviceConds
from .memory_estimate import window_fits_batched
from .motion_control import CLIP_FRAMES_OPTION, HOST_SIGMA_OPTION, WINDOW_FRAMES_OPTION, WINDOW_PLAN_OPTION

WINDOWS_KEY = "xportrait_windows"
#: transformer_options flag set by the speed options: cond and uncond in one batch when they
#: fit; off (and absent, as in SpeedOptions) runs them one after the other.
BATCH_COND_UNCOND_OPTION = "xportrait_batch_cond_uncond"
_NOT_ASKED = object()
WINDOW_MODES = ("official", "sliding", "off")


@dataclass(frozen=True)
class WindowOptions:
    """How frames are grouped for the temporal modules.

    official: X-Portrait's circular windows with a new random offset every step (seeded);
    sliding: fixed non-circular windows blended smoothly across overlaps (best for long clips);
    off: the whole clip in one pass (at most 24 frames, the temporal position table's length).
    ``offsets`` pins the official per-step offsets (cycled), for reproducing a recorded run.
    """

    mode: str = "official"
    length: int = 16
    overlap: int = 4
    offsets: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.mode not in WINDOW_MODES:
            raise ValueError(f"window mode '{self.mode}' is not one of {WINDOW_MODES}")
        if not 1 <= self.length <= 24:
            raise ValueError(f"window length {self.length} must be 1..24 (the temporal position table has 24 rows)")
        if not 0 <= self.overlap < self.length:
            raise ValueError(f"window overlap {self.overlap} must be at least 0 and below the length {self.length}")


def parse_offsets(text: str) -> tuple[int, ...] | None:
    """'17, 3, 11' -> (17, 3, 11); empty -> None (seeded random offsets)."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        offsets = tuple(int(part) for part in text.replace(";", ",").split(","))
    except ValueError:
        raise ValueError(f"window_offsets {text!r}: give whole numbers separated by commas, e.g. '17,3,11,21', "
                         "or leave it empty") from None
    if any(o < 0 for o in offsets):
        raise ValueError(f"window_offsets {text!r}: offsets are frame numbers and cannot be negative")
    return offsets


class WindowState:
    """Per-run state shared by the two wrappers (one object per patched MODEL)."""

    def __init__(self, options: WindowOptions, on_finish=()):
        self.options = options
        self.on_finish = list(on_finish)
        self._rng = random.Random(0)
        self._step = 0
        self._plan = None
        self.calls = 0
        self._steps = 1
        self._progress = None
        self._previewer = _NOT_ASKED
        self.device_conds = DeviceConds()

    def start(self, seed, steps: int = 1) -> None:
        self._rng = random.Random(0 if seed is None else int(seed))
        self._step, self._plan = 0, None
        self.calls = 0
        self._steps = max(1, steps)
        self._progress = None
        self._previewer = _NOT_ASKED

    def window_done(self, index: int, windows: int, latent_format=None, denoised: torch.Tensor | None = None) -> None:
        """Advance ComfyUI's progress bar by one window (the sampler itself ticks once per step),
        so a long clip never sits silent for a whole step; Cancel is honoured between windows.
        With ComfyUI's latent previews on, the preview shows the window just computed."""
        mm.throw_exception_if_processing_interrupted()
        total = self._steps * windows
        if self._progress is None:
            self._progress = comfy.utils.ProgressBar(total)
        preview = self._preview(latent_format, denoised) if denoised is not None else None
        self._progress.update_absolute(min(total, (self._step - 1) * windows + index + 1), total, preview)

    def _preview(self, latent_format, denoised: torch.Tensor):
        """ComfyUI's previewer (as configured: none, latent2rgb, taesd) on the window's middle frame."""
        if self._previewer is _NOT_ASKED:
            import latent_preview  # ComfyUI's own module, importable once ComfyUI runs
            self._previewer = latent_preview.get_previewer(denoised.device, latent_format) if latent_format else None
        if self._previewer is None:
            return None
        middle = denoised.shape[0] // 2
        return self._previewer.decode_latent_to_preview_image("JPEG", denoised[middle:middle + 1])

    def finish(self) -> None:
        self._plan = None
        self.device_conds.clear()
        for callback in self.on_finish:
            callback()

    def plan(self, n_frames: int) -> WindowPlan | None:
        """The windows of a new model call, or None for one pass.

        X-Portrait draws a new offset at every DDIM step, which is one model call; a new plan is
        drawn at every call, so no sigma has to be read back from the GPU to see a new step.
        """
        o = self.options
        if o.mode == "off" or n_frames <= o.length:
            if n_frames > 24:
                raise ValueError(f"{n_frames} frames in one pass exceed the temporal modules' 24-frame limit; "
                                 "use window mode 'official' or 'sliding'")
            return None
        if o.mode == "official":
            if o.offsets:
                offset = o.offsets[self._step % len(o.offsets)] % n_frames
            else:
                offset = self._rng.randint(0, n_frames - 1)
            self._plan = WindowPlan.official(n_frames, offset, o.length, o.overlap)
        else:
            self._plan = WindowPlan.sliding(n_frames, o.length, o.overlap)
        self._step += 1
        return self._plan


class _OuterSample:
    def __init__(self, state: WindowState):
        self.state = state

    def __call__(self, executor, *args, **kwargs):
        seed = kwargs.get("seed", args[7] if len(args) > 7 else None)
        latent = kwargs.get("latent_image", args[1] if len(args) > 1 else None)
        sigmas = kwargs.get("sigmas", args[3] if len(args) > 3 else None)
        if latent is not None:
            require_finite(latent, "latent_image", "the sampler's latent is broken: encode the portrait again with "
                           "X-Portrait Start Latent or check the node that made the latent")
        self.state.start(seed, len(sigmas) - 1 if sigmas is not None else 1)
        try:
            return executor(*args, **kwargs)
        finally:
            self.state.finish()


class _WindowedCondBatch:
    def __init__(self, state: WindowState):
        self.state = state

    def __call__(self, executor, model, conds, x_in, timestep, model_options):
        n = x_in.shape[0]
        # No value is read back from the GPU here: a read would wait for the previous call's
        # queued work and leave the GPU idle while this call is prepared. The sigmas are read
        # only if a check needs them (a ControlNet range short of the whole schedule).
        sigmas = ReadWhenAsked(timestep)
        plan = self.state.plan(n)
        self.state.calls += 1
        transformer_options = {**model_options.get("transformer_options", {}), CLIP_FRAMES_OPTION: n,
                               HOST_SIGMA_OPTION: HostSigma(sigmas, 0)}
        model_options = {**model_options, "transformer_options": transformer_options}
        conds = self.state.device_conds(conds, x_in.device)
        if plan is None:
            return _run_window(executor, model, conds, x_in, timestep, model_options)
        per_frame_sigma = timestep.shape[0] == n
        per_window = []
        for index, window in enumerate(plan.windows):
            frames = torch.tensor(window, dtype=torch.long)
            frames_dev = to_device(window, x_in.device, torch.long)
            options = dict(model_options)
            # The call number tells per-call caches (ControlNet residual reuse) that x_in is new.
            options["transformer_options"] = {**model_options.get("transformer_options", {}),
                                              WINDOW_FRAMES_OPTION: frames,
                                              HOST_SIGMA_OPTION: HostSigma(sigmas, window[0] if per_frame_sigma else 0),
                                              WINDOW_PLAN_OPTION: (self.state.calls, plan.windows, index)}
            per_window.append(_run_window(executor, model, conds, x_in[frames_dev],
                                          timestep[frames_dev] if per_frame_sigma else timestep, options))
            self.state.window_done(index, len(plan.windows), getattr(model, "latent_format", None),
                                   per_window[-1][0])
        # One prediction per conditioning; each is merged over the windows on its own.
        return [average_over_windows([outs[c] for outs in per_window], plan, n) for c in range(len(per_window[0]))]


class HostSigma:
    """The sigma of one row of a model call as a host float, read from the GPU only when called
    (and then once for the whole call)."""

    def __init__(self, sigmas: ReadWhenAsked, row: int):
        self.sigmas = sigmas
        self.row = row

    def __call__(self) -> float:
        return self.sigmas[self.row]


def _run_window(executor, model, conds, x, timestep, model_options):
    """One window through ComfyUI's cond batching; cond and uncond one at a time when the speed
    options ask for it or when X-Portrait's activations for the batched pass would not fit
    (ComfyUI's own check uses the plain SD1.5 estimate, which does not know the temporal modules
    and the reference bank)."""
    live = [c for c in conds if c is not None]
    batched = model_options.get("transformer_options", {}).get(BATCH_COND_UNCOND_OPTION, False)
    if len(live) < 2 or batched and window_fits_batched(model, x, len(live)):
        return executor(model, conds, x, timestep, model_options)
    # Each pass keeps its conditioning's position in the list: ComfyUI labels rows cond (0) or
    # uncond (1) by that position, and X-Portrait's patches act on the conditional rows only.
    return [None if c is None else executor(model, [c if j == i else None for j in range(len(conds))], x,
                                            timestep, model_options)[i]
            for i, c in enumerate(conds)]


def attach_windows(model: comfy.model_patcher.ModelPatcher, state: WindowState) -> None:
    model.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, WINDOWS_KEY, _OuterSample(state))
    model.add_wrapper_with_key(WrappersMP.CALC_COND_BATCH, WINDOWS_KEY, _WindowedCondBatch(state))
