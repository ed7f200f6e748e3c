"""Custom socket types of the pack (one place, so ids stay stable across modules)."""
from comfy_api.latest import io

TemporalModules = io.Custom("XPORTRAIT_TEMPORAL")
ReferenceNet = io.Custom("XPORTRAIT_REFERENCE_NET")
MotionControlNet = io.Custom("XPORTRAIT_CONTROLNET")
Driving = io.Custom("XPORTRAIT_DRIVING")
Landmarks = io.Custom("XPORTRAIT_LANDMARKS")
FaceCrop = io.Custom("XPORTRAIT_CROP")
Speed = io.Custom("XPORTRAIT_SPEED")
