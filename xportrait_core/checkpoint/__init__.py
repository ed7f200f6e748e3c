"""The X-Portrait checkpoint: expected layout (`architecture`), prefixes and file kinds
(`components`), safe opening (`safe_load`), strict checks (`validate`), per-component output
(`split`, `stream_writer`) and random test checkpoints (`tiny`)."""
