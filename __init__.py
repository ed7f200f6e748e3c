"""X-Portrait for ComfyUI: expressive portrait animation as native nodes (V3 extension).

ComfyUI is imported only when ComfyUI asks for the extension, so tools that import this folder
as a package (pytest collecting tests/, linters) do not need ComfyUI on the path.
"""


async def comfy_entrypoint():
    from .nodes import extension
    return extension()
