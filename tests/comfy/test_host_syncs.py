"""No GPU read-back per window: the ControlNets' start/end check uses the window wrapper's host
copy of the sigma, and the conditioning and reference latents are placed on the GPU once per
run. Tensors on torch's `meta` device have no values, so any read of one fails: that is how
these CPU tests see that nothing is read back."""
from __future__ import annotations

import pytest
import torch

from harness.parity_rig import pack_module

from test_speed_levers import _clip, _speed


def _control(rig, inp, percent_range):
    x, hints = _clip(inp, 3)
    pos, _ = rig.conditioning(inp["context"], hints)
    control = pos[0][1]["control"]
    control.timestep_range = percent_range
    return control


def test_start_end_check_uses_the_host_sigma_and_rounds_like_the_tensor(rig, inp):
    control = _control(rig, inp, None)
    option = pack_module("nodes.motion_control").HOST_SIGMA_OPTION
    # Bounds on either side of float32 values: the host check must round as the tensor compare does.
    just_above = float(torch.tensor(3.0, dtype=torch.float32)) + 1e-9
    control.timestep_percent_range = (0.1, 0.9)  # short of the whole schedule: the value is compared
    for bounds in ((14.6, 0.0), (just_above, 0.5), (100.0, just_above), (2.0, 1.0)):
        control.timestep_range = bounds
        for sigma in (0.25, 1.0, 3.0, 14.6, 20.0):
            t = torch.full((4,), sigma, dtype=torch.float32)
            expected = bool(t[0] > bounds[0] or t[0] < bounds[1])
            on_meta = t.to("meta")  # any read of its values would raise
            assert control._outside_range(on_meta, {option: lambda: float(t[0])}) == expected, (bounds, sigma)
            assert control._outside_range(t, {}) == expected
    with pytest.raises(Exception):
        control._outside_range(t.to("meta"), {})  # without the host copy the tensor is read


def test_whole_schedule_range_reads_nothing(rig, inp):
    control = _control(rig, inp, None)
    option = pack_module("nodes.motion_control").HOST_SIGMA_OPTION
    control.timestep_percent_range = (0.0, 1.0)
    control.timestep_range = (999999999.9, 0.0)  # what ComfyUI makes of 0% and 100%

    def no_read():
        raise AssertionError("the sigma was read")

    for sigma in (0.0, 0.03, 14.6, 1e6):
        assert not control._outside_range(torch.full((4,), sigma).to("meta"), {option: no_read})


def test_sigmas_are_read_back_only_when_asked():
    host_values = pack_module("xportrait_core.host_values")
    lazy = host_values.ReadWhenAsked(torch.zeros(3).to("meta"))
    assert not lazy.was_read, "making it reads nothing"
    with pytest.raises(Exception):
        lazy[0]  # a meta tensor has no values: asking reads
    values = host_values.ReadWhenAsked(torch.tensor([[2.5], [1.5]]))
    assert (values[1], values[0]) == (1.5, 2.5) and values.was_read


def _host_sigmas_seen(rig, inp, end_percent):
    """Every model call's host sigma as handed to the UNet, in a sampled run with windows whose
    ControlNet range ends at ``end_percent``."""
    from comfy.patcher_extension import WrappersMP

    option = pack_module("nodes.motion_control").HOST_SIGMA_OPTION
    x, hints = _clip(inp, 20)
    pos, neg = rig.conditioning(inp["context"], hints)
    pos[0][1]["control"].timestep_percent_range = (0.0, end_percent)
    model = rig.patched(inp["z_ref"], speed=_speed())
    seen = []

    def record(executor, *args, **kwargs):
        seen.append(args[5][option])  # transformer_options
        return executor(*args, **kwargs)

    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "test_host_sigma", record)
    rig.sample(model, x, [501, 251], pos, neg, cfg=5.0, seed=7)
    return seen


def test_model_calls_read_no_sigma_unless_a_control_range_needs_it(rig, inp):
    whole = _host_sigmas_seen(rig, inp, 1.0)
    assert len(whole) >= 4, "two calls, several windows each"
    assert not any(sigma.sigmas.was_read for sigma in whole), "a whole-schedule ControlNet reads no sigma"
    partial = _host_sigmas_seen(rig, inp, 0.6)
    calls = {id(sigma.sigmas): sigma.sigmas for sigma in partial}
    assert len(calls) == 2, "one set of sigmas per model call, shared by its windows"
    assert all(values.was_read for values in calls.values()), "a partial range compares each call's sigma"


def test_motion_control_range_holds_under_windows(rig, inp):
    """A range that ends between the two steps: the ControlNets run in the first model call only."""
    x, hints = _clip(inp, 20)
    counts = {}
    for label, end in (("whole", 1.0), ("first step", 0.6)):
        pos, neg = rig.conditioning(inp["context"], hints)
        pos[0][1]["control"].timestep_percent_range = (0.0, end)
        seen = counts.setdefault(label, [])
        handles = [net.input_blocks[0].register_forward_hook(lambda m, a, o, seen=seen: seen.append(a[0].shape[0]))
                   for net in (rig.pose.model, rig.local.model)]
        try:
            rig.sample(rig.patched(inp["z_ref"], speed=_speed()), x, [501, 251], pos, neg, cfg=5.0, seed=7)
        finally:
            for handle in handles:
                handle.remove()
    frames = x.shape[0]
    assert sum(counts["whole"]) == 2 * 2 * frames, "each frame once per ControlNet and model call"
    assert sum(counts["first step"]) == 2 * frames


def test_conditioning_is_placed_once_per_run(comfy):
    import comfy.conds  # importable once the fixture has ComfyUI on the path

    place = pack_module("nodes.device_conds").DeviceConds()
    text = comfy.conds.CONDCrossAttn(torch.randn(1, 5, 8))
    other = comfy.conds.CONDConstant("not a tensor")
    entry = {"model_conds": {"c_crossattn": text, "constant": other}, "uuid": "u", "control": object()}
    conds = [[entry], None]
    assert place(conds, torch.device("cpu")) is conds, "on the CPU nothing moves"

    meta = torch.device("meta")
    first = place(conds, meta)
    second = place(conds, meta)
    moved = first[0][0]["model_conds"]["c_crossattn"]
    assert first[1] is None and type(moved) is comfy.conds.CONDCrossAttn
    assert moved.cond.device == meta and moved.cond.shape == text.cond.shape and moved.cond.dtype == text.cond.dtype
    assert second[0][0]["model_conds"]["c_crossattn"] is moved, "copied once per run, not once per window"
    assert first[0][0]["model_conds"]["constant"] is other
    assert {k: v for k, v in first[0][0].items() if k != "model_conds"} == {
        k: v for k, v in entry.items() if k != "model_conds"}
    assert entry["model_conds"]["c_crossattn"] is text, "the sampler's own entries are left as they were"
    place.clear()
    assert place(conds, meta)[0][0]["model_conds"]["c_crossattn"] is not moved, "a new run copies again"


def test_reference_latents_are_placed_once_per_run(rig, inp):
    state = pack_module("nodes.reference_attention").ReferenceState(rig.reference_net, inp["z_ref"], 1.0)
    meta = torch.device("meta")
    placed = state._latents_on(meta, torch.float16)
    assert state._latents_on(meta, torch.float16) is placed
    assert placed.shape == inp["z_ref"].shape and placed.dtype == torch.float16
    assert state._latents_on(meta, torch.float32) is not placed
    state.reset()
    assert state._placed_latents is None
