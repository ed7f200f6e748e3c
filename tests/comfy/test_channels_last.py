"""The channels-last lever's bookkeeping: NHWC conv weights only inside a compiled run, put back
afterwards, also when the run fails (its numbers are checked with the compiled run in
test_speed_levers.py, and on the GPU by bench/sampling_speed.py --check-levers channels_last)."""
from __future__ import annotations

import pytest
import torch

from harness.parity_rig import pack_module
from harness.tiny_models import rel_l2

from test_speed_levers import _conv_weights, _run, _speed


def _all_nhwc(weights) -> bool:
    return all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)


def _conv_weights_of(net) -> list:
    return [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d)]


def test_channels_last_does_nothing_without_compiled_blocks(rig, inp):
    convs = _conv_weights(rig)
    seen = []
    hook = rig.model.model.diffusion_model.out.register_forward_pre_hook(
        lambda m, args: seen.append(any(not w.is_contiguous() for w in convs)))
    try:
        _run(rig, inp, _speed(compile_blocks=False, channels_last=True), frames=16, timesteps=(501,))
    finally:
        hook.remove()
    assert seen and not any(seen), "without compiled blocks no conv weight may change its layout"


class _Stop(RuntimeError):
    pass


def test_weights_are_put_back_when_a_run_fails(rig, inp):
    """A run that dies inside the reference net (as a Cancel would) leaves every weight NCHW, with
    the same values, and the lever's bookkeeping empty for the next run."""
    blocks = pack_module("nodes.compiled_blocks")
    convs = _conv_weights(rig)
    before = [w.detach().clone() for w in convs]
    unet_convs = _conv_weights_of(rig.model.model.diffusion_model)
    seen = []

    def stop(module, args):
        seen.append(_all_nhwc(unet_convs))
        raise _Stop("stopped inside the reference net")

    shipped = blocks.COMPILER
    blocks.COMPILER = blocks.BlockCompiler(backend="eager", available=lambda device: True)
    # Raised before the first compiled block runs, so nothing is traced.
    hook = rig.reference_net.model.input_blocks[0][0].register_forward_pre_hook(stop)
    try:
        with pytest.raises(_Stop):
            _run(rig, inp, _speed(compile_blocks=True, channels_last=True), frames=16, timesteps=(501,))
    finally:
        blocks.COMPILER = shipped
        hook.remove()
    assert seen and seen[0], "the UNet's conv weights should have been NHWC inside the failed run"
    assert unet_convs and all(w.is_contiguous() for w in convs), "conv weights should be NCHW after a failed run"
    assert all(torch.equal(w, b) for w, b in zip(convs, before))
    assert not blocks.CHANNELS_LAST.converted(rig.model.model.diffusion_model)


def test_choice_is_false_when_compiling_is_off():
    blocks = pack_module("nodes.compiled_blocks")
    options = {blocks.COMPILE_OPTION: False, pack_module("nodes.channels_last").CHANNELS_LAST_OPTION: True}
    choice = blocks.compile_on(options)
    assert not choice and choice.channels_last
    assert blocks.compile_on({}) == (False, False)


def test_a_block_compiled_for_one_weight_layout_is_not_reused_for_the_other(comfy):
    """Switching the lever between runs must recompile: code compiled for NHWC weights asserts
    their strides on the GPU. (Dynamo skips parameters' tensor guards by default.)"""
    import torch._dynamo
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock
    import comfy.ops
    blocks = pack_module("nodes.compiled_blocks")
    block = ResBlock(32, 16, 0.0, out_channels=32, dims=2, operations=comfy.ops.disable_weight_init).eval()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    compiled_with = []

    def backend(graph, example_inputs):
        compiled_with.append(any(t.dim() == 4 and t.shape[-1] == 3 and
                                 t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
                                 for t in example_inputs if isinstance(t, torch.Tensor)))
        return graph.forward

    x, emb = torch.randn(2, 32, 6, 6), torch.randn(2, 16)
    shipped = blocks.COMPILER
    blocks.COMPILER = blocks.BlockCompiler(backend=backend, available=lambda device: True)
    torch._dynamo.reset()
    outs = []
    try:
        with torch.inference_mode():
            for layout in (True, False, True):
                try:
                    with blocks.compiled_while(blocks.CompileChoice(True, layout), block, [block], x.device):
                        outs.append(block(x, emb))
                finally:
                    blocks.finish_compiled_run()
    finally:
        blocks.COMPILER = shipped
    assert compiled_with[:2] == [True, False], "the NCHW run should have compiled its own code"
    assert all(rel_l2(o, outs[0]) < 1e-5 for o in outs)
    assert all(w.is_contiguous() for w in _conv_weights_of(block))

