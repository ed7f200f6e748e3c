"""The CUDA-graph lever off CUDA and its eligibility rules (the replayed path itself is checked on
the GPU by bench/sampling_speed.py --cuda-graphs --check-levers, which prints its difference)."""
from __future__ import annotations

import torch

from harness.parity_rig import pack_module

from test_speed_levers import _clip, _run, _speed


def _runtime_options(model) -> dict:
    """transformer_options as the UNet call sees them (ComfyUI adds the patcher's wrappers)."""
    return {**model.model_options["transformer_options"], "wrappers": model.wrappers}


def test_cuda_graphs_leave_cpu_results_exact(rig, inp):
    # Off CUDA the lever hands every UNet and ControlNet call straight through: bit-identical.
    _, off = _run(rig, inp, _speed(cuda_graphs=False))
    model = rig.patched(inp["z_ref"], speed=_speed(cuda_graphs=True))
    x, hints = _clip(inp, 29)
    pos, neg = rig.conditioning(inp["context"], hints)
    _, on = rig.sample(model, x, [501, 251], pos, neg, cfg=5.0, seed=7)
    assert torch.equal(on, off)
    graphs = model.model_options["transformer_options"][pack_module("nodes.motion_control").GRAPHS_OPTION]
    assert graphs.replay.replays == 0 and graphs.replay.recorded == 0


def test_cuda_graphs_off_leaves_no_trace_on_the_model(rig, inp):
    graphs = pack_module("nodes.cuda_graphs")
    model = rig.patched(inp["z_ref"], speed=_speed(cuda_graphs=False))
    assert graphs.GRAPHS_OPTION not in model.model_options["transformer_options"]
    assert graphs.GRAPHS_KEY not in model.wrappers.get("diffusion_model", {})


def test_cuda_graphs_only_record_xportrait_alone(rig, inp):
    """A recording freezes the UNet's Python; any patch that is not X-Portrait's own, or a
    per-frame reference mode, keeps the call eager."""
    from comfy.patcher_extension import WrappersMP
    graphs = pack_module("nodes.cuda_graphs")
    check = graphs.only_xportrait_patches
    on = _speed(cuda_graphs=True)
    assert check(_runtime_options(rig.patched(inp["z_ref"], speed=on))) is None

    upstream = rig.model.clone()  # a wrapper added before Apply runs outside the recording
    upstream.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "someone_else", lambda executor, *a, **k: executor(*a, **k))
    patched = pack_module("nodes.xportrait_patch").apply_xportrait(
        upstream, rig.temporal, rig.reference_net, inp["z_ref"], 1.0,
        pack_module("nodes.window_sampling").WindowOptions(), on)
    assert check(_runtime_options(patched)) is None

    later = patched.clone()  # ... one added after it would run inside it
    later.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "someone_else_inner", lambda executor, *a, **k: executor(*a, **k))
    assert "someone_else_inner" in check(_runtime_options(later))

    other_patch = rig.patched(inp["z_ref"], speed=on)
    other_patch.set_model_attn2_patch(lambda q, k, v, extra_options: (q, k, v))
    assert "attn2_patch" in check(_runtime_options(other_patch))

    per_frame = rig.patched(inp["z_ref"], speed=on, reference_mode="per frame")
    assert "attn1" in check(_runtime_options(per_frame))


def test_cuda_graphs_need_every_weight_resident(rig):
    graphs = pack_module("nodes.cuda_graphs")
    for net in (rig.model.model.diffusion_model, rig.pose.model):
        device = next(net.parameters()).device
        assert graphs.weights_resident(net, device)
        layer = next(m for m in net.modules() if hasattr(m, "comfy_cast_weights"))
        layer.comfy_cast_weights = True  # what ComfyUI sets on layers it streams (lowvram, dynamic VRAM)
        try:
            assert not graphs.weights_resident(net, device)
        finally:
            layer.comfy_cast_weights = False
        assert not graphs.weights_resident(net, torch.device("meta"))


def test_reference_net_call_reaches_the_graph_lever_once_per_model_call(rig, inp):
    # Off CUDA the call runs eagerly (bit-identical), but it must reach the lever once per model
    # call with the tensors a recording would copy: the reference latents, the timestep, the context.
    _, off = _run(rig, inp, _speed(cuda_graphs=False))
    model = rig.patched(inp["z_ref"], speed=_speed(cuda_graphs=True))
    graphs = model.model_options["transformer_options"][pack_module("nodes.motion_control").GRAPHS_OPTION]
    seen = []
    lever = graphs.reference

    def counted(net, unet, run, inputs, attention_override):
        seen.append((net, [tuple(t.shape) for t in inputs]))
        return lever(net, unet, run, inputs, attention_override)

    graphs.reference = counted
    x, hints = _clip(inp, 29)
    pos, neg = rig.conditioning(inp["context"], hints)
    _, on = rig.sample(model, x, [501, 251], pos, neg, cfg=5.0, seed=7)
    assert torch.equal(on, off)
    assert len(seen) == 2  # two model calls, each with several windows
    assert all(net is rig.reference_net.model for net, _ in seen)
    latents, timestep, context = seen[0][1]
    assert latents == tuple(inp["z_ref"].shape) and timestep == (1,) and context[0] == 1


def test_reference_net_graph_needs_resident_weights_and_our_attention(rig, inp):
    graphs = pack_module("nodes.cuda_graphs")
    choose_kernel = pack_module("nodes.attention_choice").choose_kernel
    net, unet = rig.reference_net.model, rig.model.model.diffusion_model
    latents = inp["z_ref"]
    assert graphs.RunGraphs().reference_allowed(net, unet, latents, choose_kernel)
    assert graphs.RunGraphs().reference_allowed(net, unet, latents, None)
    assert not graphs.RunGraphs().reference_allowed(net, unet, latents, lambda *args, **kwargs: None)
    for streamed in (unet, net):  # the projections read the UNet's to_k/to_v
        layer = next(m for m in streamed.modules() if hasattr(m, "comfy_cast_weights"))
        layer.comfy_cast_weights = True
        try:
            assert not graphs.RunGraphs().reference_allowed(net, unet, latents, choose_kernel)
        finally:
            layer.comfy_cast_weights = False
