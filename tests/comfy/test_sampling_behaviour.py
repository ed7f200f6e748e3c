"""How X-Portrait sampling behaves inside ComfyUI: cleanup, clip lengths, seeds, batching, cost."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.parity_rig import pack_module


def _hints(inp, n):
    idx = torch.arange(n) % inp["hint"].shape[0]
    return inp["hint"][idx], inp["local_hint"][idx]


def _x(inp, n, seed=0):
    return torch.randn(n, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


def _plain_latent(rig, inp):
    """A plain sampler run on the unpatched base MODEL; loading it ejects any patched clone."""
    pos, neg = rig.conditioning(inp["context"])
    _, final = rig.sample(rig.model, _x(inp, 3), [501, 251], pos, neg, cfg=5.0)
    assert _unet_is_clean(rig), "temporal modules or chunked feed-forwards were left inside the UNet during a plain run"
    return final


def _unet_is_clean(rig) -> bool:
    TemporalModule = pack_module("xportrait_core.temporal").TemporalModule
    ChunkedFeedForward = pack_module("nodes.feed_forward_chunks").ChunkedFeedForward
    unet = rig.model.model.diffusion_model
    blocks = list(unet.input_blocks) + list(unet.output_blocks)
    return not any(isinstance(layer, TemporalModule) for block in blocks for layer in block) and \
        not any(isinstance(m, ChunkedFeedForward) for m in unet.modules())


def test_model_is_clean_after_success_error_and_interrupt(rig, inp):
    import comfy.model_management as mm
    before = _plain_latent(rig, inp)
    # success
    pos, neg = rig.conditioning(inp["context"], _hints(inp, 5))
    rig.sample(rig.patched(inp["z_ref"]), _x(inp, 5), [501, 251], pos, neg, cfg=5.0)
    assert torch.equal(_plain_latent(rig, inp), before)
    # an error inside sampling: hints for 2 frames, latent of 5 frames
    pos, neg = rig.conditioning(inp["context"], _hints(inp, 2))
    with pytest.raises(ValueError, match="driving hints have 2"):
        rig.sample(rig.patched(inp["z_ref"]), _x(inp, 5), [501, 251], pos, neg, cfg=5.0)
    assert torch.equal(_plain_latent(rig, inp), before)
    # Cancel: ComfyUI's interrupt flag raised from the progress callback mid-run
    pos, neg = rig.conditioning(inp["context"], _hints(inp, 5))
    model = rig.patched(inp["z_ref"])
    import comfy.sample
    import comfy.samplers
    sigmas = torch.stack([rig.sigma(501), rig.sigma(251), torch.tensor(0.0)])

    def cancel(step, *args):
        mm.interrupt_current_processing(True)
        mm.throw_exception_if_processing_interrupted()

    with pytest.raises(mm.InterruptProcessingException):
        comfy.sample.sample_custom(model, torch.zeros(5, 4, 16, 16), 5.0, comfy.samplers.sampler_object("ddim"),
                                   sigmas, pos, neg, _x(inp, 5), callback=cancel, disable_pbar=True, seed=0)
    mm.interrupt_current_processing(False)
    assert torch.equal(_plain_latent(rig, inp), before)


@pytest.mark.parametrize("mode", ["official", "sliding"])
@pytest.mark.parametrize("frames", [1, 5, 16, 17, 40])
def test_any_clip_length_gives_finite_non_flat_frames(rig, inp, mode, frames):
    pos, neg = rig.conditioning(inp["context"], _hints(inp, frames))
    _, final = rig.sample(rig.patched(inp["z_ref"], mode=mode), _x(inp, frames), [501, 1], pos, neg, cfg=5.0)
    assert final.shape[0] == frames and torch.isfinite(final).all()
    assert (final.flatten(1).std(1) > 1e-3).all(), "a frame came out flat"


def test_official_windows_reproduce_with_the_seed(rig, inp):
    pos, neg = rig.conditioning(inp["context"], _hints(inp, 22))
    runs = [rig.sample(rig.patched(inp["z_ref"]), _x(inp, 22), [751, 501, 1], pos, neg, cfg=5.0, seed=s)[1]
            for s in (11, 11, 12)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2]), "another seed should draw other window offsets"


def test_cond_and_uncond_share_one_call_and_the_bank_is_computed_once_per_step(rig, inp):
    from comfy.patcher_extension import WrappersMP
    calls, records = [], []
    speed = pack_module("nodes.speed_options").SpeedOptions(batch_cond_uncond=True)
    model = rig.patched(inp["z_ref"], speed=speed)

    def spy(executor, x, timesteps, context, y, control, transformer_options, **kw):
        calls.append((list(transformer_options["cond_or_uncond"]), x.shape[0]))
        return executor(x, timesteps, context, y, control, transformer_options, **kw)

    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "test_spy", spy)
    state_cls = pack_module("nodes.reference_attention").ReferenceState
    original = state_cls._record

    def counting(self, *a, **k):
        records.append(1)
        return original(self, *a, **k)

    state_cls._record = counting
    try:
        pos, neg = rig.conditioning(inp["context"], _hints(inp, 30))
        rig.sample(model, _x(inp, 30), [751, 1], pos, neg, cfg=5.0)
    finally:
        state_cls._record = original
    assert all(sorted(tags) == [0, 1] and rows == 32 for tags, rows in calls), calls
    assert len(calls) >= 4, "30 frames need at least two 16-frame windows per step"
    assert len(records) == 2, f"reference net ran {len(records)} times for 2 steps"


def test_long_clip_hints_from_compact_storage_equal_float_hints(rig, inp):
    """A few hundred frames: hints kept as Encode Driving keeps them (the frames as given, window
    centres) and built per window (the long-clip path, nothing cached on the device) give exactly
    the whole-clip float result."""
    control = pack_module("nodes.motion_control")
    driving = pack_module("xportrait_core.face.driving")
    frames = 240
    g = torch.Generator().manual_seed(11)
    size = inp["hint"].shape[-1]
    source = torch.rand(frames, size, size, 3, generator=g)
    centres = torch.randint(0, size, (frames, 3, 2), generator=g).numpy()
    encoding = driving.DrivingEncoding(source, size, "cv2", centres, None, None, np.zeros(frames, bool))
    compact = control.MotionHints.from_encoding(encoding)
    explicit = control.MotionHints(driving.global_hint_rows(encoding.aligned),
                                   driving.local_hint_rows(encoding.aligned, centres))
    assert torch.equal(compact.local_hint, explicit.local_hint)
    x = torch.randn(frames, inp["x_t"].shape[1], *inp["x_t"].shape[-2:], generator=g)
    results = []
    for hints, cache in ((explicit, control.HINT_CACHE_BYTES), (compact, 0)):
        pos, neg = rig.conditioning(inp["context"], hints)
        pos[0][1]["control"].hint_cache_bytes = cache
        results.append(rig.sample(rig.patched(inp["z_ref"]), x, [501], pos, neg, cfg=5.0, seed=7)[1])
    assert torch.equal(results[0], results[1])
