"""Convert the official X-Portrait checkpoint into per-component ``.safetensors`` files.

    python -m xportrait_core.convert model_state-415001.th OUTDIR [--dtype fp16|bf16|fp32]
                                     [--components base_sd15 temporal ...]

The input is opened safely (weights only, memory-mapped) and validated strictly before anything
is written; a bad file exits with status 2 and says what is wrong. The loader nodes apply the
same policy: keys outside every network (EMA weights, ``lvlb_weights``, step counters) are
ignored with one warning, and missing schedule buffers or temporal position tables are rebuilt
from the config with one warning (`checkpoint.rebuild`). See `checkpoint.split` for the
files written. Memory stays near one tensor: the source is never copied as a whole.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .checkpoint.errors import CheckpointError
from .checkpoint.rebuild import with_rebuilt_buffers
from .checkpoint.safe_load import load_state_dict
from .checkpoint.split import DTYPES, OUTPUT_FILES, write_components
from .checkpoint.validate import validate_checkpoint
from .download import sha256_file
from .progress import ProgressLine


def convert(source: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = "fp16",
            components: list[str] | None = None, progress: ProgressLine | None = None) -> dict[str, Path]:
    """Validate `source`, then write its components into `out_dir`; returns output -> path."""
    source = Path(source)
    state_dict = with_rebuilt_buffers(load_state_dict(source), source.name)
    validate_checkpoint(state_dict, source=source.name)
    digest = sha256_file(source, (lambda done, total: progress("hashing source", done, total)) if progress else None)
    if progress:
        progress.finish()
    written = write_components(state_dict, out_dir, dtype, components, digest, source_path=source, progress=progress)
    if progress:
        progress.finish()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xportrait_core.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="model_state-415001.th (or any file this pack can split)")
    parser.add_argument("outdir", help="folder for the .safetensors files (usually ComfyUI/models/xportrait)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp16", help="dtype of the parameters (default fp16)")
    parser.add_argument("--components", nargs="+", choices=list(OUTPUT_FILES), metavar="NAME",
                        help=f"outputs to write (default all): {', '.join(OUTPUT_FILES)}")
    args = parser.parse_args(argv)
    progress = ProgressLine()
    try:
        written = convert(args.input, args.outdir, args.dtype, args.components, progress)
    except (CheckpointError, ValueError, OSError) as error:
        progress.finish()
        print(f"error: {error}", file=sys.stderr)
        return 2
    for output, path in written.items():
        print(f"{output:<18} {path}  ({path.stat().st_size / 1e9:.2f} GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
