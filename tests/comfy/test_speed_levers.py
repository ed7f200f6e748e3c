"""Every speed and memory lever computes what the plain path computes (CPU, fp32, real ComfyUI
sampler on the parity model). GPU-only kernel choices are checked by bench/attention_kernels.py,
which prints their errors; here they must fall back to exactly ComfyUI's own result."""
from __future__ import annotations

import pytest
import torch

from harness.parity_rig import pack_module
from harness.tiny_models import rel_l2

LEVER_BOUND = 1e-5


def _clip(inp, frames: int):
    """A clip longer than one window, built from the fixture's hints and its latent size."""
    idx = torch.arange(frames) % inp["hint"].shape[0]
    size = inp["x_t"].shape[-2:]
    x = torch.randn(frames, inp["x_t"].shape[1], *size, generator=torch.Generator().manual_seed(3))
    return x, (inp["hint"][idx], inp["local_hint"][idx])


def _conv_weights(rig) -> list:
    """Every 2-D convolution weight of the UNet, the reference net and both ControlNets."""
    nets = (rig.model.model.diffusion_model, rig.reference_net.model, rig.pose.model, rig.local.model)
    return [m.weight for net in nets for m in net.modules() if isinstance(m, torch.nn.Conv2d)]


def _speed(**levers):
    return pack_module("nodes.speed_options").SpeedOptions(**levers)


def _run(rig, inp, speed, frames=29, counter=None, timesteps=(501, 251)):
    x, hints = _clip(inp, frames)
    pos, neg = rig.conditioning(inp["context"], hints)
    handles = []
    if counter is not None:
        for net in (rig.pose.model, rig.local.model):  # the first block runs once per ControlNet pass
            handles.append(net.input_blocks[0].register_forward_hook(
                lambda m, args, out: counter.append(args[0].shape[0])))
    try:
        record, final = rig.sample(rig.patched(inp["z_ref"], speed=speed), x, list(timesteps), pos, neg,
                                   cfg=5.0, seed=7)
    finally:
        for handle in handles:
            handle.remove()
    return record, final


def test_levers_on_equal_levers_off(rig, inp):
    _, off = _run(rig, inp, _speed(attention_kernels=False, reuse_control_residuals=False))
    _, on = _run(rig, inp, _speed())
    assert rel_l2(on, off) < LEVER_BOUND


def test_attention_kernel_choice_is_exact_off_the_gpu(rig, inp):
    # On CPU the override hands every call back to ComfyUI's own attention: bit-identical.
    _, off = _run(rig, inp, _speed(attention_kernels=False, reuse_control_residuals=False))
    _, on = _run(rig, inp, _speed(attention_kernels=True, reuse_control_residuals=False))
    assert torch.equal(on, off)


def test_residual_reuse_runs_each_frame_once_per_call(rig, inp):
    frames = 29
    plain, reused = [], []
    _, a = _run(rig, inp, _speed(reuse_control_residuals=False), frames, plain)
    _, b = _run(rig, inp, _speed(reuse_control_residuals=True), frames, reused)
    calls, nets = 2, 2
    assert sum(reused) == frames * calls * nets, "every frame should pass the ControlNets once per call"
    assert sum(plain) > sum(reused), "without reuse the overlapping frames run again"
    assert rel_l2(a, b) < LEVER_BOUND


def test_hint_features_are_encoded_once_per_frame_and_run(rig, inp):
    """The ControlNets' hint encoder reads no timestep: with the lever on it runs once per frame
    and run (here 2 calls), off it runs in every ControlNet pass; a clip over the byte budget
    encodes per window. All three compute the same result."""
    frames, nets = 29, (rig.pose.model, rig.local.model)
    x, hints = _clip(inp, frames)
    results, encoded = {}, {}
    for label, reuse, budget in (("on", True, None), ("off", False, None), ("over budget", True, 0)):
        rows = []
        handles = [net.input_hint_block.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
                   for net in nets]
        pos, neg = rig.conditioning(inp["context"], hints)
        if budget is not None:
            pos[0][1]["control"].hint_cache_bytes = budget
        try:
            _, results[label] = rig.sample(rig.patched(inp["z_ref"], speed=_speed(reuse_hint_features=reuse)), x,
                                           [501, 251], pos, neg, cfg=5.0, seed=7)
        finally:
            for handle in handles:
                handle.remove()
        encoded[label] = sum(rows)
    assert encoded["on"] == frames * len(nets), "each frame's hints should be encoded once per net and run"
    calls = 2
    assert encoded["off"] == encoded["over budget"] == frames * calls * len(nets)  # residual reuse: once per call
    assert rel_l2(results["on"], results["off"]) < LEVER_BOUND
    assert rel_l2(results["over budget"], results["off"]) < LEVER_BOUND


def test_frame_attention_kernel_reaches_the_temporal_modules_and_falls_back_exactly(rig, inp):
    """The lever hands the temporal modules the fused-kernel callable; off the GPU that callable
    runs the attention_kernels choice, so the result is bit-identical. The kernel's own numbers
    are checked by tests/core/test_frame_attention_kernel.py (Triton's interpreter) and
    bench/temporal_attention.py (H200)."""
    choice = pack_module("nodes.attention_choice")
    temporal = [m for m in rig.temporal.model.modules() if type(m).__name__ == "TemporalModule"]
    seen = []

    def record(module, args):
        seen.append(args[2])

    def run(**levers):
        seen.clear()
        handles = [m.register_forward_pre_hook(record) for m in temporal]
        try:
            return _run(rig, inp, _speed(reuse_control_residuals=False, **levers), frames=20, timesteps=(501,))[1]
        finally:
            for handle in handles:
                handle.remove()

    on = run(frame_attention_kernel=True)
    assert seen and all(a is choice.temporal_attention(True, True) for a in seen)
    assert seen[0] is not choice.temporal_attention(True, False)
    off = run(frame_attention_kernel=False)
    assert seen and all(a is choice.temporal_attention(True, False) for a in seen)
    assert torch.equal(on, off)
    # Without attention_kernels the fused callable falls back to torch's SDPA, as the modules' default.
    q, k, v = (torch.randn(6, 8, 16, 40, generator=torch.Generator().manual_seed(s)) for s in range(3))
    assert torch.equal(choice.temporal_attention(False, True)(q, k, v),
                       torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert choice.temporal_attention(False, False) is None


def test_temporal_modules_use_comfy_casting_layers(rig, inp):
    # Layers built from ComfyUI's ops can be streamed by its memory manager (lowvram / small cards).
    modules = rig.temporal.model
    castable = [m for m in modules.modules() if hasattr(m, "comfy_cast_weights")]
    weighted = [m for m in modules.modules() if any(True for _ in m.parameters(recurse=False))]
    assert castable and len(castable) == len(weighted)
    module = modules.input_blocks_motion_module[0][0]
    x = torch.randn(2 * 4, module.channels, 4, 4, generator=torch.Generator().manual_seed(1))
    plain = module(x, 4)
    for layer in castable:
        layer.comfy_cast_weights = True  # the per-layer streaming path ComfyUI switches on
    try:
        streamed = module(x, 4)
    finally:
        for layer in castable:
            layer.comfy_cast_weights = False
    assert torch.equal(plain, streamed)


def test_memory_estimate_is_window_sized(rig):
    estimate = pack_module("nodes.memory_estimate")
    seen = []
    wrapper = estimate._WindowSizedEstimate(16)
    for frames in (60, 240):
        wrapper(lambda model, shape, conds, *a, **k: seen.append(shape[0]), rig.model, [frames, 4, 64, 64], {})
    assert seen[0] == seen[1], "the estimate must not grow with the clip: a call never sees more than a window"
    plain_row = rig.model.model.memory_required([1, 4, 64, 64])
    ours = estimate.activation_bytes(16, 64, 64, 4) + estimate.RUN_OVERHEAD_BYTES
    assert abs(seen[0] * plain_row - ours) <= plain_row


def test_vae_decodes_long_batches_in_chunks_exactly(rig):
    networks = pack_module("nodes.networks")
    frames = networks.DECODE_CHUNK + 3
    latents = torch.randn(frames, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    whole = rig.vae.decode(latents)
    single = torch.cat([rig.vae.decode(latents[i:i + 1]) for i in range(frames)])
    assert whole.shape[0] == frames
    assert rel_l2(whole, single) < LEVER_BOUND


def test_per_frame_references_under_windows(rig, inp):
    """Each frame reads its own reference's bank in every window: identical references must give
    exactly the shared single-reference result, and a wrong reference count is refused."""
    frames = 20
    x, hints = _clip(inp, frames)
    pos, neg = rig.conditioning(inp["context"], hints)
    shared = rig.sample(rig.patched(inp["z_ref"]), x, [501, 251], pos, neg, cfg=5.0, seed=7)[1]
    same_refs = inp["z_ref"].expand(frames, -1, -1, -1).contiguous()
    per_frame = rig.sample(rig.patched(same_refs, reference_mode="per frame"), x, [501, 251], pos, neg, cfg=5.0,
                           seed=7)[1]
    assert rel_l2(per_frame, shared) < LEVER_BOUND
    with pytest.raises(ValueError, match="3 reference images for a clip of 20 frames"):
        rig.sample(rig.patched(same_refs[:3], reference_mode="per frame"), x, [501, 251], pos, neg, cfg=5.0)


def test_an_attention_override_set_upstream_is_kept(rig):
    speed = pack_module("nodes.speed_options")
    key = pack_module("nodes.attention_choice").OVERRIDE_OPTION

    def theirs(func, *args, **kwargs):  # e.g. another pack's attention patch
        return func(*args, **kwargs)

    model = rig.model.clone()
    model.model_options.setdefault("transformer_options", {})[key] = theirs
    for on in (True, False):
        speed.apply_speed_options(model, speed.SpeedOptions(attention_kernels=on))
        assert model.model_options["transformer_options"][key] is theirs
    plain = rig.model.clone()
    speed.apply_speed_options(plain, speed.SpeedOptions())
    assert plain.model_options["transformer_options"][key] is pack_module("nodes.attention_choice").choose_kernel



def test_compiled_blocks_compute_the_plain_result_and_leave_nothing_behind(rig, inp):
    """The compile lever's mechanism on the CPU: torch's `eager` backend traces every block with
    dynamo (its guards decide reuse and recompiles) without inductor's GPU code generation."""
    import torch._dynamo
    blocks = pack_module("nodes.compiled_blocks")
    walk = pack_module("nodes.controlnet_forward")
    # One step over two windows: every block traces, with fewer batch shapes to trace again.
    steps = dict(frames=20, timesteps=(501,))
    _, plain = _run(rig, inp, _speed(compile_blocks=False), **steps)
    shipped = blocks.COMPILER
    blocks.COMPILER = compiler = blocks.BlockCompiler(backend="eager", available=lambda device: True)
    torch._dynamo.reset()
    # The channels-last lever (on by default) rides along: NHWC conv weights during the run only.
    convs = _conv_weights(rig)
    before = [w.detach().clone() for w in convs]
    seen = []
    hook = rig.model.model.diffusion_model.out.register_forward_pre_hook(
        lambda m, args: seen.append(all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)))
    try:
        _, out = _run(rig, inp, _speed(compile_blocks=True), **steps)
    finally:
        blocks.COMPILER = shipped
        hook.remove()
    assert rel_l2(out, plain) < LEVER_BOUND
    assert seen and all(seen), "the compiled run should see every conv weight in channels-last format"
    assert all(w.is_contiguous() for w in convs), "conv weights should be NCHW again after the run"
    assert all(torch.equal(w, b) for w, b in zip(convs, before))
    compiled = [ref() for ref, _ in compiler._compiled.values()]
    unet, nets = rig.model.model.diffusion_model, (rig.pose.model, rig.local.model)
    temporal = [m for m in rig.temporal.model.modules() if type(m).__name__ == "TemporalModule"]
    reference = rig.reference_net.model
    # The temporal modules are injected only while sampling.
    expected = list(blocks.unet_blocks(unet)) + temporal + list(blocks.unet_blocks(reference))
    for net in nets:
        expected += list(walk.controlnet_blocks(net))
    assert {"ResBlock", "SpatialTransformer", "Downsample", "Upsample", "TemporalModule"} <= {
        type(b).__name__ for b in expected}
    assert len(compiled) == len(expected) and all(any(b is c for c in compiled) for b in expected), (
        "every block of the UNet, temporal modules, reference net and ControlNets should have run compiled")
    for module in (unet, *temporal, *nets, reference):
        assert all(m._compiled_call_impl is None for m in module.modules()), "compiled blocks leaked out of sampling"


def test_controlnet_walk_is_the_controlnets_own_forward(rig, inp):
    """The pack's ControlNet pass (which hands the attention choice to its blocks) computes
    exactly what ComfyUI's ControlNet forward computes with the same attention."""
    walk = pack_module("nodes.controlnet_forward")
    choice = pack_module("nodes.attention_choice")
    g = torch.Generator().manual_seed(11)
    frames = inp["hint"].shape[0]
    x = torch.randn(frames, *inp["x_t"].shape[1:], generator=g)
    t = torch.full((frames,), 501.0)
    context = inp["context"].expand(frames, -1, -1)
    seen = []

    def counting(func, *args, **kwargs):
        seen.append(args[0].shape)
        return choice.choose_kernel(func, *args, **kwargs)

    for net, hint in ((rig.pose.model, inp["hint"]), (rig.local.model, inp["local_hint"])):
        own = net(x=x, hint=hint, timesteps=t, context=context)
        for options in ({}, {choice.OVERRIDE_OPTION: counting}):
            seen.clear()
            walked = walk.controlnet_residuals(net, x, hint, t, context, options)
            assert len(walked) == len(own["output"]) + 1
            for a, b in zip(walked, own["output"] + own["middle"]):
                assert torch.equal(a, b)
        # Two attentions (self, text) per transformer block reach the override.
        assert len(seen) == 2 * sum(1 for b in walk.controlnet_blocks(net) if type(b).__name__ == "SpatialTransformer")


def test_reference_i_reaches_frame_i_under_windows(rig, inp):
    """Per-frame mode across overlapping windows: without temporal modules frames do not mix,
    so changing reference j must change frame j's result and no other frame's."""
    frames, changed = 20, 13  # frame 13 lies in two windows of a 16/4 plan over 20 frames
    x, hints = _clip(inp, frames)
    pos, neg = rig.conditioning(inp["context"], hints)
    g = torch.Generator().manual_seed(5)
    refs = inp["z_ref"].expand(frames, -1, -1, -1) + 0.3 * torch.randn(
        frames, *inp["z_ref"].shape[1:], generator=g)
    other = refs.clone()
    other[changed] = torch.randn(other.shape[1:], generator=g)
    out = [rig.sample(rig.patched(r, temporal=False, reference_mode="per frame"), x, [501, 251], pos, neg,
                      cfg=5.0, seed=7)[1] for r in (refs, other)]
    moved = (out[0] - out[1]).flatten(1).abs().amax(1)
    assert moved[changed] > 1e-3
    assert torch.equal(torch.cat([out[0][:changed], out[0][changed + 1:]]),
                       torch.cat([out[1][:changed], out[1][changed + 1:]]))
