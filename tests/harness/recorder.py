"""A test-only output node that keeps whatever value reaches it, keyed by a tag."""
from __future__ import annotations


def recorder_node() -> type:
    """A fresh recorder class (each test module registers its own, with its own `seen` dict)."""

    class Recorder:
        seen: dict = {}

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("*", {}), "tag": ("STRING", {"default": ""})}}

        RETURN_TYPES = ()
        FUNCTION = "record"
        OUTPUT_NODE = True
        CATEGORY = "testing"

        def record(self, value, tag):
            Recorder.seen[tag] = value
            return {}

    return Recorder
