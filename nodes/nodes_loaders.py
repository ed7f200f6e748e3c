"""Loader nodes: base model, temporal modules, reference net, the two motion ControlNets."""
from __future__ import annotations

from comfy_api.latest import io

from . import model_download, model_files
from .networks import (WEIGHT_DTYPE_TOOLTIP, WEIGHT_DTYPES, build_base_model, build_controlnet, build_temporal_modules,
                       build_reference_net, build_vae)
from .prompt import empty_prompt_context
from .types import MotionControlNet, ReferenceNet, TemporalModules

CATEGORY = "X-Portrait/loaders"
FILE_TOOLTIP = ("A file in models/xportrait: the official model_state-415001.th (split on first use) or a file "
                "converted by `python -m xportrait_core.convert`. model_state-415001.th is always listed, so a "
                "shared workflow opens even before it is downloaded; switch `download` on to fetch it.")


def _file_input():
    return io.Combo.Input("model_file", options=model_download.loader_choices(), tooltip=FILE_TOOLTIP)


def _download_input():
    # Optional, so prompts and workflows saved before it existed still validate (as off).
    return io.Boolean.Input("download", default=False, optional=True, label_on="if missing", label_off="off",
                            tooltip=model_download.DOWNLOAD_TOOLTIP)


def _ready(model_file: str, download: bool) -> str:
    """The chosen file, fetched first when it is missing and `download` is on."""
    model_download.ensure_present(model_file, download)
    return model_file


def _dtype_input():
    return io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="auto", tooltip=WEIGHT_DTYPE_TOOLTIP)


class LoadBaseModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitLoadBaseModel", display_name="Load X-Portrait Base Model", category=CATEGORY,
            description="The SD1.5 UNet and VAE stored inside the X-Portrait file (or the converted "
                        "xportrait_base_sd15 file). A plain SD1.5 checkpoint from the core loader also works.",
            inputs=[_file_input(), _dtype_input(), _download_input()],
            outputs=[io.Model.Output(tooltip="The SD1.5 generation UNet: connect to Apply X-Portrait."),
                     io.Vae.Output(tooltip="The SD VAE: encodes the portrait, decodes the frames.")])

    @classmethod
    def execute(cls, model_file, weight_dtype, download=False) -> io.NodeOutput:
        model_file = _ready(model_file, download)
        unet = model_files.load_component(model_file, "unet")
        vae = model_files.load_component(model_file, "vae")
        return io.NodeOutput(build_base_model(unet, weight_dtype), build_vae(vae))


class LoadTemporalModules(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitLoadTemporalModules", display_name="Load X-Portrait Temporal Modules", category=CATEGORY,
            description="The 20 temporal (motion) modules that make frames of a window consistent.",
            inputs=[_file_input(), _dtype_input(), _download_input()],
            outputs=[TemporalModules.Output(display_name="temporal_modules", tooltip="Connect to Apply X-Portrait.")])

    @classmethod
    def execute(cls, model_file, weight_dtype, download=False) -> io.NodeOutput:
        model_file = _ready(model_file, download)
        # Own copies: the module set adopts tensors as given, and these would otherwise share
        # memory with the memory-mapped checkpoint file.
        sd = {k: v.clone() for k, v in model_files.load_component(model_file, "temporal").items()}
        return io.NodeOutput(build_temporal_modules(sd, weight_dtype))


class LoadReferenceNet(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitLoadReferenceNet", display_name="Load X-Portrait Reference Net", category=CATEGORY,
            description="The appearance (reference) net that carries the portrait's identity into every frame.",
            inputs=[_file_input(), _dtype_input(), _download_input()],
            outputs=[ReferenceNet.Output(display_name="reference_net", tooltip="Connect to Apply X-Portrait.")])

    @classmethod
    def execute(cls, model_file, weight_dtype, download=False) -> io.NodeOutput:
        model_file = _ready(model_file, download)
        return io.NodeOutput(build_reference_net(model_files.load_component(model_file, "reference_net"), weight_dtype))


class LoadMotionControlNet(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitLoadMotionControlNet", display_name="Load X-Portrait Motion ControlNet",
            category=CATEGORY, description="The global motion ControlNet, driven by the aligned driving frames.",
            inputs=[_file_input(), _dtype_input(), _download_input()],
            outputs=[MotionControlNet.Output(display_name="motion_controlnet", tooltip="Connect to Motion Control's motion_controlnet.")])

    @classmethod
    def execute(cls, model_file, weight_dtype, download=False) -> io.NodeOutput:
        model_file = _ready(model_file, download)
        return io.NodeOutput(build_controlnet(model_files.load_component(model_file, "pose_controlnet"), weight_dtype))


class LoadLocalControlNet(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitLoadLocalControlNet", display_name="Load X-Portrait Local ControlNet",
            category=CATEGORY, description="The local ControlNet, driven by eye and mouth patches of the driving frames.",
            inputs=[_file_input(), _dtype_input(), _download_input()],
            outputs=[MotionControlNet.Output(display_name="local_controlnet", tooltip="Connect to Motion Control's local_controlnet.")])

    @classmethod
    def execute(cls, model_file, weight_dtype, download=False) -> io.NodeOutput:
        model_file = _ready(model_file, download)
        return io.NodeOutput(build_controlnet(model_files.load_component(model_file, "local_controlnet"), weight_dtype))


class EmptyPrompt(io.ComfyNode):
    """X-Portrait only ever uses the empty prompt; this gives its embedding without a CLIP node."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitEmptyPrompt", display_name="X-Portrait Empty Prompt", category=CATEGORY,
            description="The empty-prompt conditioning X-Portrait was trained with, from the text encoder inside "
                        "the X-Portrait file (or a stored '<file>.empty_prompt.safetensors' embedding). CLIP Text "
                        "Encode with an empty text and an SD1.5 CLIP gives the same.",
            inputs=[_file_input(), _download_input()],
            outputs=[io.Conditioning.Output(tooltip="CLIP(\"\"), X-Portrait's only prompt: connect to Motion "
                                             "Control's positive and negative.")])

    @classmethod
    def execute(cls, model_file, download=False) -> io.NodeOutput:
        model_file = _ready(model_file, download)
        return io.NodeOutput([[empty_prompt_context(model_file), {}]])


LOADER_NODES = [LoadBaseModel, LoadTemporalModules, LoadReferenceNet, LoadMotionControlNet, LoadLocalControlNet,
                EmptyPrompt]
