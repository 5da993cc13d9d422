"""Writing a simulated example: checked, built beside its folder and renamed into place; FASTA and BED writers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pysam

from genoformer.errors import OutputError
from genoformer.outputs import staged_folder


def publish(out_dir: Path, force: bool, build) -> None:
    """Build into a hidden sibling directory, then rename it to `out_dir` (genoformer.outputs.staged_folder)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise OutputError(f"{out_dir}: directory exists and is not empty",
                          hint="use --force to replace it, or choose another --out")
    with staged_folder(out_dir) as tmp:
        build(tmp)


def write_fasta(path: Path, seqs: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        for name, seq in seqs.items():
            raw = seq.tobytes()
            fh.write(b">" + name.encode() + b"\n")
            fh.write(b"".join(raw[i:i + 60] + b"\n" for i in range(0, len(raw), 60)))
    pysam.faidx(str(path))


def write_bed(path: Path, rows) -> None:
    path.write_text("".join("\t".join(map(str, row)) + "\n" for row in rows))
