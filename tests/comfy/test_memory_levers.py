"""Memory levers compute what the plain path computes (CPU, fp32, ComfyUI's sampler on the
parity model): cond and uncond as separate passes, and the transformer feed-forwards in row
chunks."""
from __future__ import annotations

import torch

from harness.parity_rig import pack_module
from harness.tiny_models import rel_l2

from test_speed_levers import LEVER_BOUND, _clip, _run, _speed


def test_separate_cond_uncond_passes_equal_the_batched_pass(rig, inp):
    """Off, each window runs its conditional and unconditional passes one after the other. The
    unconditional pass must still be labelled uncond, so it gets no ControlNet and no bank."""
    rows = {}
    for batched in (True, False):
        seen = rows.setdefault(batched, [])
        _, rows[f"out{batched}"] = _run(rig, inp, _speed(batch_cond_uncond=batched), counter=seen)
    assert rel_l2(rows["outFalse"], rows["outTrue"]) < LEVER_BOUND
    assert sum(rows[False]) == sum(rows[True]) > 0, "the ControlNets see the conditional rows only, in both modes"


def test_separate_passes_label_each_conditioning_by_its_place(rig, inp):
    """ComfyUI marks rows cond (0) or uncond (1) by the conditioning's position in the list it gets."""
    seen = []
    model = rig.patched(inp["z_ref"], speed=_speed(batch_cond_uncond=False))
    model.set_model_unet_function_wrapper(
        lambda apply, args: seen.append(tuple(args["cond_or_uncond"])) or apply(args["input"], args["timestep"], **args["c"]))
    x, hints = _clip(inp, 20)
    pos, neg = rig.conditioning(inp["context"], hints)
    rig.sample(model, x, [501], pos, neg, cfg=5.0, seed=7)
    assert seen and set(seen) == {(0,), (1,)}
    assert seen.count((0,)) == seen.count((1,))


def test_feed_forward_row_chunks_are_exact(rig, inp, monkeypatch):
    """With a chunk budget small enough to split every feed-forward (the UNet's, through object
    patches, and the temporal modules'), sampling gives the whole-batch result; the patches are
    ComfyUI object patches, gone once ComfyUI loads the plain MODEL, and keep the parameter names."""
    chunks = pack_module("xportrait_core.feed_forward")
    wrapper = pack_module("nodes.feed_forward_chunks").ChunkedFeedForward
    unet = rig.model.model.diffusion_model
    names = sorted(name for name, _ in unet.named_parameters())
    gates = {"unet": [m.ff.net[0] for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock"],
             "temporal": [m.net[0] for m in rig.temporal.model.modules() if type(m).__name__ == "FeedForward"]}
    assert gates["unet"] and gates["temporal"]

    def gate_calls(budget):
        counts = {group: [] for group in gates}

        def seen(gate, args, group):  # the hidden bytes this call would hold without chunks
            x = args[0]
            counts[group].append(x.numel() // x.shape[-1] * gate.proj.out_features * 3 // 2 * x.element_size())

        handles = [gate.register_forward_hook(lambda m, a, o, group=group: seen(m, a, group))
                   for group, modules in gates.items() for gate in modules]
        monkeypatch.setattr(chunks, "CHUNK_BYTES", budget)
        try:
            _, out = _run(rig, inp, _speed())
        finally:
            for handle in handles:
                handle.remove()
        return out, counts

    whole, whole_calls = gate_calls(2**40)
    # Half the smallest feed-forward's hidden bytes: every feed-forward splits, none into thousands.
    smallest = min(min(sizes) for sizes in whole_calls.values())
    chunked, chunked_calls = gate_calls(smallest // 2)
    for group in gates:
        assert len(chunked_calls[group]) > len(whole_calls[group]) > 0, f"the {group} feed-forwards should run in chunks"
    assert rel_l2(chunked, whole) < LEVER_BOUND
    pos, neg = rig.conditioning(inp["context"])  # a plain run on the base MODEL ejects the patched clone
    rig.sample(rig.model, _clip(inp, 3)[0], [501], pos, neg, cfg=5.0)
    assert not any(type(m) is wrapper for m in unet.modules()), "an object patch leaked into a plain run"
    assert sorted(name for name, _ in unet.named_parameters()) == names


def test_feed_forward_chunks_equal_the_whole_batch():
    torch.manual_seed(0)
    ff = pack_module("xportrait_core.temporal").FeedForward(16)
    chunks = pack_module("xportrait_core.feed_forward")
    x = torch.randn(3, 10, 7, 16)
    whole = ff.net(x)
    for budget in (64, 4096, 10**9):
        out = chunks.feed_forward_in_chunks(ff.net, x, chunks.hidden_width(ff.net), budget)
        assert out.shape == whole.shape
        assert torch.allclose(out, whole, rtol=1e-6, atol=1e-6)
