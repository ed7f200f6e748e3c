"""Real-ComfyUI test harness: the pack loaded into ComfyUI in-process and as an HTTP server."""
