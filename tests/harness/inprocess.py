"""ComfyUI loaded once per test session in CPU mode, prompts run by its own executor."""
from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass, field

from .paths import comfyui_dir


class _ServerStub:
    """The few attributes PromptExecutor reads from PromptServer; messages are kept for tests."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.messages: list[tuple[str, dict]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


@dataclass
class RunResult:
    success: bool
    outputs: dict
    node_errors: dict = field(default_factory=dict)
    error: dict | None = None
    messages: list = field(default_factory=list)

    def error_text(self) -> str:
        texts = [str(self.error or "")]
        texts += [str(d) for e, d in self.messages if e == "execution_error"]
        texts += [str(v) for v in self.node_errors.values()]
        return "\n".join(texts)


class InProcessComfy:
    def __init__(self, extra_model_dirs: dict[str, str], output_dir: str, cpu: bool = True):
        root = str(comfyui_dir())
        if root not in sys.path:
            sys.path.insert(0, root)
        # As main.py does before anything else: ComfyUI's own `utils` package first. Older nodes.py
        # (0.16) put comfy/ at the front of sys.path when imported, where comfy/utils.py would
        # then shadow it and core nodes importing utils.install_util would fail to load.
        import utils.install_util  # noqa: F401
        import comfy.options
        comfy.options.enable_args_parsing(False)
        import comfy.cli_args
        comfy.cli_args.args.cpu = cpu
        import folder_paths
        folder_paths.set_output_directory(output_dir)
        import nodes
        import execution
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        for kind, path in extra_model_dirs.items():
            folder_paths.add_model_folder_path(kind, path, is_default=True)
        self.nodes = nodes
        self.execution = execution
        self.server = _ServerStub()
        self.executor = execution.PromptExecutor(self.server, cache_type=execution.CacheType.NONE,
                                                 cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})

    def node_class(self, class_type: str):
        return self.nodes.NODE_CLASS_MAPPINGS[class_type]

    def run(self, prompt: dict) -> RunResult:
        prompt_id = str(uuid.uuid4())
        valid = asyncio.run(self.execution.validate_prompt(prompt_id, prompt, None))
        ok, error, outputs, node_errors = valid[0], valid[1], valid[2], valid[3]
        if not ok:
            return RunResult(False, {}, node_errors, error)
        self.server.messages = []
        self.executor.execute(prompt, prompt_id, {"client_id": None}, outputs)
        return RunResult(self.executor.success, self.executor.history_result.get("outputs", {}),
                         messages=list(self.executor.status_messages) + list(self.server.messages))
