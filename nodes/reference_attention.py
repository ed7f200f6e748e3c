"""Reference attention wired into ComfyUI.

A DIFFUSION_MODEL wrapper runs the reference net once per sampling step (cached on the
timestep, so every window of the step reuses it) at batch = number of reference images, records
its 16 `norm1` banks, projects them through the generation UNet's own `to_k`/`to_v`, and hands
them to attn1-replace patches through transformer_options. The patches extend the keys/values
of conditional rows only; unconditional rows take the exact plain-attention path.
"""
from __future__ import annotations

import torch

import comfy.ldm.modules.attention as comfy_attention
import comfy.model_patcher
from comfy.ldm.modules.attention import BasicTransformerBlock, SpatialTransformer
from comfy.patcher_extension import WrappersMP

from ..xportrait_core.reference_bank import (REFERENCE_MODES, ReferenceBank, chunk_runs, per_frame_bank_rows,
                                             position_runs, reference_attention, take_rows)

from .attention_choice import OVERRIDE_OPTION
from .compiled_blocks import compile_on, compiled_while, unet_blocks
from .motion_control import CLIP_FRAMES_OPTION, GRAPHS_OPTION, WINDOW_FRAMES_OPTION, WINDOW_PLAN_OPTION
from .networks import storage_only

REFERENCE_KEY = "xportrait_reference"
BANK_OPTION = "xportrait_reference_kv"


def transformer_sites(unet) -> list[tuple[tuple[str, int, int], BasicTransformerBlock]]:
    """Every self-attention site of an LDM UNet in forward order, keyed like ComfyUI's attn1 patches."""
    groups = [("input", i, b) for i, b in enumerate(unet.input_blocks)]
    groups.append(("middle", 0, unet.middle_block))
    groups += [("output", i, b) for i, b in enumerate(unet.output_blocks)]
    sites = []
    for name, number, block in groups:
        for layer in block:
            if isinstance(layer, SpatialTransformer):
                sites += [((name, number, t), tb) for t, tb in enumerate(layer.transformer_blocks)]
    return sites


class _BankRecorder:
    """attn1 patch for the reference net: remembers each block's norm1 tokens, changes nothing."""

    def __init__(self):
        self.entries: list[torch.Tensor] = []

    def __call__(self, n, context_attn1, value_attn1, extra_options):
        self.entries.append(n)
        return n, context_attn1, value_attn1


class ReferenceState:
    """What the reference patches share: the reference net, the reference latents, the cache.

    One object per applied MODEL; the patch callables hold it by reference (ComfyUI copies
    model_options dicts and lists on clone, not the objects inside them).
    """

    def __init__(self, reference_net: comfy.model_patcher.ModelPatcher, latents: torch.Tensor, strength: float,
                 mode: str = "shared"):
        if mode not in REFERENCE_MODES:
            raise ValueError(f"reference_mode '{mode}' is not one of {REFERENCE_MODES}")
        self.reference_net = reference_net
        self.latents = latents
        self.strength = float(strength)
        self.mode = mode
        self._cache_key = None
        self._cache_context = None
        self._cache_value = None
        self._placed_latents = None

    def reset(self) -> None:
        self._cache_key = self._cache_context = self._cache_value = None
        self._placed_latents = None

    def _latents_on(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The reference latents on the sampling device, copied once per run: a copy from
        host memory at every model call would wait for the GPU's queue to drain first."""
        placed = self._placed_latents
        if placed is None or placed.device != device or placed.dtype != dtype:
            placed = self._placed_latents = self.latents.to(device=device, dtype=dtype)
        return placed

    def _compute_dtype(self, context: torch.Tensor) -> torch.dtype:
        net = self.reference_net.model
        dtype = getattr(self.reference_net, "compute_dtype", None) or next(net.parameters()).dtype
        return context.dtype if storage_only(dtype) else dtype  # fp8 weights: compute in the sampler's dtype

    def _record(self, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, attention_override=None,
                compiled: bool = False) -> ReferenceBank:
        net = self.reference_net.model
        refs = latents.shape[0]
        recorder = _BankRecorder()
        options = {"patches": {"attn1_patch": [recorder]}}
        if attention_override is not None:
            options[OVERRIDE_OPTION] = attention_override
        # Compiled, the recorder's list is guarded by its length: each site compiles once.
        with torch.no_grad(), compiled_while(compiled, net, unet_blocks(net), latents.device):
            net(latents, timesteps=timestep.expand(refs), context=context.expand(refs, -1, -1),
                transformer_options=options)
        if self.mode == "per frame":
            return ReferenceBank(recorder.entries)  # [references, tokens, C]: one bank per reference
        return ReferenceBank.from_references([recorder.entries])

    def _record_and_project(self, unet, inputs: tuple, attention_override, compiled: bool) -> dict:
        """The bank of one model call projected through the UNet's own to_k/to_v, per site.
        ``inputs`` (latents, timestep, context) are the only tensors it reads besides weights,
        so the CUDA-graph lever can replay it."""
        bank = self._record(*inputs, attention_override, compiled)
        sites = transformer_sites(unet)
        if len(sites) != len(bank):
            raise ValueError(f"reference net recorded {len(bank)} attention sites but the MODEL has "
                             f"{len(sites)}: the reference net does not match this base model")
        with torch.no_grad():
            return {site: (block.attn1.to_k(entry), block.attn1.to_v(entry))
                    for (site, block), entry in zip(sites, bank.entries)}

    def projected_bank(self, unet, timestep: torch.Tensor, context: torch.Tensor, attention_override=None,
                       call=None, compiled: bool = False, graphs=None) -> dict:
        """The bank for this timestep and context, recorded once per model call.

        ``call`` is the window wrapper's model-call number: all windows of one call share the
        timestep and the (empty-prompt) context, so the call number alone is the key and no
        value has to be read back from the GPU. Without it (no windows) values are compared.
        ``graphs`` (the CUDA-graph lever's RunGraphs, or None) may replay the recorded call.
        """
        if call is not None:
            key = ("call", call, tuple(context.shape), str(context.device))
            stale = key != self._cache_key
        else:
            # Every window hands over its own copy of the same context, so compare values.
            key = (float(timestep.reshape(-1)[0]), tuple(context.shape), str(context.device))
            stale = key != self._cache_key or not torch.equal(context, self._cache_context)
        if stale:
            dtype = self._compute_dtype(context)
            inputs = (self._latents_on(context.device, dtype), timestep.to(context.device), context.to(dtype))

            def run(args):
                return self._record_and_project(unet, args, attention_override, compiled)

            if graphs is not None:
                projected = graphs.reference(self.reference_net.model, unet, run, inputs, attention_override)
            else:
                projected = run(inputs)
            self._cache_key, self._cache_context, self._cache_value = key, context, projected
        return self._cache_value


class _DiffusionModelBank:
    def __init__(self, state: ReferenceState):
        self.state = state

    def __call__(self, executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        cond_or_uncond = transformer_options.get("cond_or_uncond") or []
        if 0 in cond_or_uncond and self.state.strength != 0.0:
            first = next(rows.start for rows, is_cond in chunk_runs(cond_or_uncond, x.shape[0]) if is_cond)
            plan = transformer_options.get(WINDOW_PLAN_OPTION)
            bank = self.state.projected_bank(executor.class_obj, timesteps[first:first + 1], context[first:first + 1],
                                             transformer_options.get(OVERRIDE_OPTION), plan[0] if plan else None,
                                             compile_on(transformer_options), transformer_options.get(GRAPHS_OPTION))
            transformer_options = {**transformer_options, BANK_OPTION: bank}
        return executor(x, timesteps, context, y, control, transformer_options, **kwargs)


class BankAttention:
    """attn1 replacement at one site: bank-extended attention for conditional rows only."""

    def __init__(self, state: ReferenceState, site: tuple[str, int, int]):
        self.state = state
        self.site = site

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        precision = extra_options.get("attn_precision")

        def attention(q_, k_, v_):
            return comfy_attention.optimized_attention(q_, k_, v_, heads, attn_precision=precision,
                                                       transformer_options=extra_options)

        bank = extra_options.get(BANK_OPTION)
        if bank is None:
            return attention(q, k, v)
        k_bank, v_bank = bank[self.site]
        strength = self.state.strength
        if k_bank.shape[0] > 1 or self.state.mode == "per frame":
            k_bank, v_bank = self._rows_of_window(k_bank, v_bank, extra_options, q.shape[0])

        def fit(bank, n):  # several conditional chunks in one run each read the window's banks
            return bank if bank.shape[0] in (1, n) else bank.repeat(n // bank.shape[0], 1, 1)

        outs = [reference_attention(q[rows], k[rows], v[rows], fit(k_bank, rows.stop - rows.start),
                                    fit(v_bank, rows.stop - rows.start), attention, strength) if is_cond
                else attention(q[rows], k[rows], v[rows])
                for rows, is_cond in chunk_runs(extra_options["cond_or_uncond"], q.shape[0])]
        return outs[0] if len(outs) == 1 else torch.cat(outs)


    def _rows_of_window(self, k_bank, v_bank, extra_options, batch):
        """Per-frame banks: the bank of each frame of this window, in window order."""
        chunk = batch // len(extra_options["cond_or_uncond"])
        frames = extra_options.get(WINDOW_FRAMES_OPTION)
        frames = list(range(chunk)) if frames is None else frames.tolist()
        rows = per_frame_bank_rows(k_bank.shape[0], frames, extra_options.get(CLIP_FRAMES_OPTION, chunk))
        if rows is None:
            return k_bank, v_bank
        runs = position_runs(rows)
        return take_rows(k_bank, runs), take_rows(v_bank, runs)


def attach_reference_attention(model: comfy.model_patcher.ModelPatcher, state: ReferenceState) -> None:
    """Patch a cloned MODEL with reference attention at every transformer block."""
    model.set_additional_models(REFERENCE_KEY, [state.reference_net])
    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, REFERENCE_KEY, _DiffusionModelBank(state))
    for (name, number, index), _ in transformer_sites(model.model.diffusion_model):
        model.set_model_attn1_replace(BankAttention(state, (name, number, index)), name, number, index)
