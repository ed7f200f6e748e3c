"""nodes/comfy_compat.py: the feature detection behind the pack's support of older ComfyUI
releases, checked on stand-ins for both sides of each difference (the real old release runs in
tests/install)."""
from __future__ import annotations

import torch

from harness.parity_rig import pack_module


class _Calls:
    def __init__(self):
        self.seen = []


class OldConfig(_Calls):  # ComfyUI before 0.28: the two dtypes only
    def set_inference_dtype(self, dtype, manual_cast_dtype):
        self.seen.append((dtype, manual_cast_dtype))


class NewConfig(_Calls):  # 0.28 on: the load device as well
    def set_inference_dtype(self, dtype, manual_cast_dtype, device=None):
        self.seen.append((dtype, manual_cast_dtype, device))


class ForwardingConfig(_Calls):  # an override that passes everything on (as some model configs do)
    def set_inference_dtype(self, dtype, manual_cast_dtype, **kwargs):
        self.seen.append((dtype, manual_cast_dtype, kwargs))


def test_set_inference_dtype_passes_the_device_only_where_it_is_taken(comfy):
    compat = pack_module("nodes.comfy_compat")
    device = torch.device("cpu")
    old, new, forwarding = OldConfig(), NewConfig(), ForwardingConfig()
    for config in (old, new, forwarding):
        compat.set_inference_dtype(config, torch.float16, torch.float32, device)
    assert old.seen == [(torch.float16, torch.float32)]
    assert new.seen == [(torch.float16, torch.float32, device)]
    assert forwarding.seen == [(torch.float16, torch.float32, {"device": device})]


def test_the_real_model_config_gets_its_dtype(comfy):
    compat = pack_module("nodes.comfy_compat")
    from comfy.supported_models import SD15
    config = SD15({"use_linear_in_transformer": False, "context_dim": 768,
                   "adm_in_channels": None, "use_temporal_attention": False})
    compat.set_inference_dtype(config, torch.float16, torch.float32, torch.device("cpu"))
    assert config.unet_config["dtype"] is torch.float16 and config.manual_cast_dtype is torch.float32


def test_core_model_patcher_is_read_at_call_time_and_falls_back(comfy, monkeypatch):
    compat = pack_module("nodes.comfy_compat")
    import comfy.model_patcher as mp

    class Swapped(mp.ModelPatcher):  # what main.py puts there for DynamicVRAM
        pass

    monkeypatch.setattr(mp, "CoreModelPatcher", Swapped)
    assert compat.core_model_patcher() is Swapped
    monkeypatch.delattr(mp, "CoreModelPatcher")  # releases before 0.12
    assert compat.core_model_patcher() is mp.ModelPatcher
