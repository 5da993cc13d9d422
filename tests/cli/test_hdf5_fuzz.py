"""`export` and `merge` on damaged copies of a real predictions file (made by predict with a tiny model).

Each mutation (seeded: bytes flipped at random places, datasets or attributes dropped, shapes and
dtypes changed, values made non-finite, the file cut short) must end in exit 0 with the same
records as the undamaged file, or in a contract exit code (2, 3) with one `error:` line naming
the file: never a traceback, exit 1 (a bug) or a crash. All cases run in one process
(cli_batch.py), so the whole fuzz takes seconds.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli.test_bad_inputs import LOG_LINES

SEED = 20_261_207
N_FLIPS = 24  # files with bytes flipped at random places
CONTIG = "contigs/chr20"


def _flip(rng: np.random.Generator):
    def mutate(path: Path) -> None:
        data = bytearray(path.read_bytes())
        at = int(rng.integers(0, len(data)))
        for i in range(at, min(at + int(rng.integers(1, 9)), len(data))):
            data[i] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(data))
    return mutate


def _edit(change):
    def mutate(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            change(f)
    return mutate


def _replace(name: str, make):
    """Replace dataset `name` of the contig with make(old dataset) -> (data or shape, dtype)."""
    def change(f):
        old = f[f"{CONTIG}/{name}"]
        attrs = dict(old.attrs)
        shape, dtype = make(old)
        del f[f"{CONTIG}/{name}"]
        new = f.create_dataset(f"{CONTIG}/{name}", shape=shape, dtype=dtype, chunks=True, compression="gzip")
        new.attrs.update(attrs)
    return _edit(change)


def _nan_probs(f):
    probs = f[f"{CONTIG}/variant/probs"]
    start = int(np.flatnonzero(f[f"{CONTIG}/covered"][10_000_000:10_030_000])[100]) + 10_000_000
    block = probs[start:start + 10]
    block[:] = np.nan
    probs[start:start + 10] = block


def _truncate(fraction: float):
    def mutate(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * fraction)])
    return mutate


STRUCTURAL = {
    "drop covered": _edit(lambda f: f.__delitem__(f"{CONTIG}/covered")),
    "drop probs": _edit(lambda f: f.__delitem__(f"{CONTIG}/variant/probs")),
    "drop alt": _edit(lambda f: f.__delitem__(f"{CONTIG}/variant/alt")),
    "drop contigs": _edit(lambda f: f.__delitem__("contigs")),
    "drop format attr": _edit(lambda f: f.attrs.__delitem__("format")),
    "drop task attr": _edit(lambda f: f.attrs.__delitem__("task")),
    "drop complete attr": _edit(lambda f: f.attrs.__delitem__("complete")),
    "drop length attr": _edit(lambda f: f[CONTIG].attrs.__delitem__("length")),
    "drop classes attr": _edit(lambda f: f[f"{CONTIG}/variant/probs"].attrs.__delitem__("classes")),
    "drop reference attr": _edit(lambda f: f.attrs.__delitem__("reference")),
    "bad format_version": _edit(lambda f: f.attrs.__setitem__("format_version", "one")),
    "bad contig_md5 json": _edit(lambda f: f.attrs.__setitem__("contig_md5", "{not json")),
    "bad length attr": _edit(lambda f: f[CONTIG].attrs.__setitem__("length", -5)),
    "two classes named": _edit(lambda f: f[f"{CONTIG}/variant/probs"].attrs.__setitem__("classes", ["a", "b"])),
    "covered half as long": _replace("covered", lambda d: ((d.shape[0] // 2,), bool)),
    "probs with 2 columns": _replace("variant/probs", lambda d: ((d.shape[0], 2), d.dtype)),
    "probs one-dimensional": _replace("variant/probs", lambda d: ((d.shape[0],), d.dtype)),
    "probs as int8": _replace("variant/probs", lambda d: (d.shape, np.int8)),
    "covered as float": _replace("covered", lambda d: (d.shape, np.float32)),
    "alt as float": _replace("variant/alt", lambda d: (d.shape, np.float32)),
    "nan probabilities": _edit(_nan_probs),
    "cut at 90%": _truncate(0.9),
    "cut at 10%": _truncate(0.1),
}


def _cases() -> dict:
    rng = np.random.default_rng(SEED)
    return {**STRUCTURAL, **{f"flip {i}": _flip(rng) for i in range(N_FLIPS)}}


def _records(vcf: Path) -> list[str]:
    import pysam

    with pysam.VariantFile(str(vcf)) as fh:
        return [str(rec) for rec in fh]


@pytest.fixture(scope="module")
def fuzz(tiny_predictions, tmp_path_factory):
    """{(case, command): {"code", "stderr", "out"}} for every mutated copy, plus the undamaged file's records."""
    root = tmp_path_factory.mktemp("hdf5_fuzz")
    jobs, keys = [], []
    for i, (name, mutate) in enumerate(_cases().items()):
        path = root / f"case{i:02d}.h5"
        shutil.copyfile(tiny_predictions, path)
        mutate(path)
        for command, out in (("export", root / f"case{i:02d}.vcf"), ("merge", root / f"case{i:02d}.merged.h5")):
            args = (["export", str(path), "--vcf", str(out)] if command == "export" else
                    ["merge", str(path), "--out", str(out)])
            jobs.append(args + ["--no-progress"])
            keys.append((name, command, out, path))
    jobs.append(["export", str(tiny_predictions), "--vcf", str(root / "original.vcf"), "--no-progress"])
    (root / "jobs.json").write_text(json.dumps(jobs))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))  # this checkout's genoformer
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("cli_batch.py")), str(root / "jobs.json")],
                          capture_output=True, text=True, timeout=300, cwd=root, env=env)
    assert proc.returncode not in (-signal.SIGSEGV, -signal.SIGABRT), f"crashed: {proc.stderr[-2000:]}"
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(jobs), proc.stderr[-2000:]
    assert results[-1]["code"] == 0, results[-1]["stderr"]
    found = {(name, command): r | {"out": out, "path": path} for (name, command, out, path), r in zip(keys, results)}
    return found, _records(root / "original.vcf")


@pytest.mark.parametrize("command", ["export", "merge"])
@pytest.mark.parametrize("case", list(_cases()))
def test_damaged_predictions_fail_cleanly_or_read_the_same(fuzz, case, command):
    found, original = fuzz
    r = found[(case, command)]
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip() and not ln.startswith(LOG_LINES)]
    assert "Traceback" not in r["stderr"], r["stderr"]
    if r["code"] == 0:
        if command == "export":
            assert _records(r["out"]) == original, f"{case}: exit 0 with other records"
        else:
            with h5py.File(r["out"]) as merged, h5py.File(r["path"]) as damaged:
                for name in ("covered", "variant/probs"):
                    a, b = merged[f"{CONTIG}/{name}"], damaged[f"{CONTIG}/{name}"]
                    assert np.array_equal(a[10_000_000:10_030_000], b[10_000_000:10_030_000], equal_nan=True)
        return
    assert r["code"] in (2, 3), (r["code"], r["stderr"])
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and all(ln.startswith(("error:", "hint:")) for ln in lines), r["stderr"]
    assert re.search(re.escape(r["path"].name), errors[0]), errors[0]
    assert not Path(r["out"]).exists()
