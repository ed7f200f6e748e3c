"""A real ComfyUI server subprocess on 127.0.0.1 with the pack whitelisted."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import websocket

from .paths import PACK_NAME, comfyui_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, workdir: Path, extra_model_dirs: dict[str, str], input_dir: Path | None = None,
                 extra_args: list[str] = (), env: dict[str, str] | None = None, python: str | None = None,
                 comfyui: Path | None = None):
        """`extra_args` are added to ComfyUI's command line, `env` to its environment. `python` and
        `comfyui` run another install (tests/install: a fresh venv beside another ComfyUI); by
        default the test venv's interpreter runs the ComfyUI that scripts/setup_env.sh provisioned."""
        self.workdir = Path(workdir)
        self.python, self.comfyui = python or sys.executable, Path(comfyui) if comfyui else None
        self.extra_args, self.env = list(extra_args), dict(env or {})
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.output_dir = self.workdir / "output"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "frontend").mkdir(exist_ok=True)
        yaml_lines = ["xportrait_tests:", f"  base_path: {self.workdir}"]
        yaml_lines += [f"  {kind}: {path}" for kind, path in extra_model_dirs.items()]
        self.config = self.workdir / "extra_model_paths.yaml"
        self.config.write_text("\n".join(yaml_lines) + "\n")
        self.input_dir = Path(input_dir) if input_dir else self.workdir / "input"
        self.input_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "server.log"
        self.proc = None

    def start(self, timeout: float = 240.0) -> "ComfyServer":
        comfy = self.comfyui or comfyui_dir()
        cmd = [self.python, str(comfy / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_NAME,
               "--extra-model-paths-config", str(self.config), "--output-directory", str(self.output_dir), "--input-directory", str(self.input_dir),
               "--front-end-root", str(self.workdir / "frontend"), "--database-url", "sqlite:///:memory:",
               "--disable-auto-launch", *self.extra_args]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=comfy, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI server exited early:\n{self.log()}")
            try:
                self.get_json("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI server did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()

    def get_json(self, path: str):
        with urllib.request.urlopen(self.base + path, timeout=30) as r:
            return json.loads(r.read())

    def post_json(self, path: str, payload: dict):
        req = urllib.request.Request(self.base + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
                return r.status, (json.loads(body) if body else None)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def view(self, filename: str, subfolder: str = "", kind: str = "output") -> bytes:
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": kind})
        with urllib.request.urlopen(f"{self.base}/view?{q}", timeout=30) as r:
            return r.read()

    def run(self, prompt: dict, timeout: float = 600.0, on_event=None, extra_data: dict | None = None) -> dict:
        """Queue a prompt, follow progress on the websocket, return its /history entry plus events
        (binary websocket messages, i.e. preview images, appear as {"type": "binary", "bytes": n})."""
        client_id = str(uuid.uuid4())
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=timeout)
        try:
            request = {"prompt": prompt, "client_id": client_id}
            if extra_data:
                request["extra_data"] = extra_data
            status, body = self.post_json("/prompt", request)
            if status != 200:
                return {"rejected": body, "events": []}
            prompt_id = body["prompt_id"]
            events = []
            while True:
                message = ws.recv()
                if not isinstance(message, str):
                    events.append({"type": "binary", "bytes": len(message)})
                    continue
                event = json.loads(message)
                events.append(event)
                if on_event is not None:
                    on_event(event)
                data = event.get("data", {})
                if data.get("prompt_id") != prompt_id:
                    continue
                if event["type"] in ("execution_error", "execution_interrupted"):
                    break
                if event["type"] == "executing" and data.get("node") is None:
                    break
                if event["type"] == "execution_success":
                    break
        finally:
            ws.close()
        return {"history": self.finished_history(prompt_id), "events": events, "prompt_id": prompt_id}

    def finished_history(self, prompt_id: str, timeout: float = 60.0) -> dict:
        """The prompt's /history entry once ComfyUI has filed it. The websocket's last event is sent
        from inside the executor, before the queue files the result, so /history can still be empty
        for a moment after it (a race CI hit on a busy 2-core machine)."""
        deadline = time.time() + timeout
        while True:
            entry = self.get_json(f"/history/{prompt_id}").get(prompt_id, {})
            if entry.get("status", {}).get("completed") is not None or time.time() > deadline:
                return entry
            time.sleep(0.1)
