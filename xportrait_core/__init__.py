"""Host-independent X-Portrait math: temporal modules, reference banks, window schedules, face
geometry and checkpoint key maps. Never imports ComfyUI (a test enforces it)."""
