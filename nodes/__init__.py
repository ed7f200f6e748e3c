"""ComfyUI glue of the X-Portrait pack: node classes and the model patches they apply."""
from comfy_api.latest import ComfyExtension, io

from . import model_files
from .nodes_driving import DRIVING_NODES
from .nodes_loaders import LOADER_NODES
from .nodes_official import OFFICIAL_NODES
from .nodes_sampling import SAMPLING_NODES


class XPortraitExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*LOADER_NODES, *SAMPLING_NODES, *OFFICIAL_NODES, *DRIVING_NODES]


def extension() -> XPortraitExtension:
    model_files.register_folder()
    return XPortraitExtension()
