"""Writing a simulated example: build it beside its folder and rename it into place; FASTA and BED writers."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pysam

from genoformer.errors import GenoformerError, OutputError


def publish(out_dir: Path, force: bool, build) -> None:
    """Build into a hidden sibling directory, then rename it to `out_dir`."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise OutputError(f"{out_dir}: directory exists and is not empty",
                          hint="use --force to replace it, or choose another --out")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial",
                                    dir=out_dir.parent))
    except OSError as err:
        raise OutputError(f"{out_dir}: cannot create the output directory ({err.strerror})",
                          hint="check the path and its permissions") from err
    try:
        build(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if out_dir.exists():
            old = tmp.with_suffix(".old")
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out_dir)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and not isinstance(err, GenoformerError):
            raise OutputError(f"{out_dir}: cannot write the example ({err})") from err
        raise


def write_fasta(path: Path, seqs: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        for name, seq in seqs.items():
            raw = seq.tobytes()
            fh.write(b">" + name.encode() + b"\n")
            fh.write(b"".join(raw[i:i + 60] + b"\n" for i in range(0, len(raw), 60)))
    pysam.faidx(str(path))


def write_bed(path: Path, rows) -> None:
    path.write_text("".join("\t".join(map(str, row)) + "\n" for row in rows))
