"""Merge the prediction shards of one sample into one HDF5 file (`genoformer merge`).

A batch run predicts a sample as many disjoint shards (one Snakemake job each) and gathers
them here.  Nothing is written until every check of genoformer.predict.merge_checks has passed: each
shard is a complete predictions file; all come from the same model, reference, hash seed,
window, margin and reads; no base is covered twice (merge never picks one prediction over
another); and, with expectations (`expect_regions`, `expect_bed`, `expect_contigs`), every
expected base is covered, so a missing or failed shard cannot pass unnoticed.

Shards are then combined a chunk row range at a time, so memory follows the chunk, not the
contig: a range one shard covers alone is copied as its stored compressed chunks (checked, not
re-encoded), other ranges are decoded and combined base by base, and ranges no shard covers are
never written (chunked HDF5 reads them as 0, as the format requires of uncovered bases).  The
output is written to a temp file beside it, marked complete, fsynced and renamed; it records the
shard list as provenance.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from genoformer import __version__
from genoformer.coords import Interval, IntervalSet, merge_intervals, parse_region, read_bed
from genoformer.errors import OutputError, UsageError
from genoformer.interrupt import raise_if_terminated
from genoformer.io.predictions import LIBVER, datasets, groups, reading
from genoformer.predict.merge_checks import (Shard, check_consistent, check_disjoint, check_expected, read_shard,
                                             reference_lengths)
from genoformer.outputs import hdf5_output, staged

_BLOCK = 1 << 20  # bases read at a time where chunks do not line up: ~6 MB of float16 probs per shard


@dataclass(frozen=True)
class MergeConfig:
    """What `merge` was asked to do; saved as the output's `merge_config` attr."""
    shards: tuple[str, ...]
    out: str
    expect_regions: tuple[str, ...] = ()  # samtools-style regions (1-based) that must be covered
    expect_bed: str | None = None  # a BED (0-based) of intervals that must be covered
    expect_contigs: bool = False  # every base of every reference contig must be covered
    force: bool = False  # replace an existing output
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "shards", tuple(str(s) for s in self.shards))
        object.__setattr__(self, "expect_regions", tuple(self.expect_regions))


@dataclass
class MergeResult:
    out: Path
    shards: int
    covered: dict[str, int]  # contig -> covered bases


# ---------------------------------------------------------------------------------------------
# what the shards must cover


def expected_intervals(config: MergeConfig, lengths: Mapping[str, int]) -> list[Interval]:
    """The intervals `config` expects to be covered (merged), checked against the reference lengths."""
    wanted = [parse_region(text, lengths, source="--expect-region") for text in config.expect_regions]
    if config.expect_bed:
        wanted += read_bed(config.expect_bed, lengths)
    if config.expect_contigs:
        wanted += [Interval(contig, 0, length) for contig, length in lengths.items()]
    return merge_intervals(wanted)


# ---------------------------------------------------------------------------------------------
# writing


def _provenance(shards: Sequence[Shard], config: MergeConfig, command: str) -> dict:
    """Root attrs of the merged file: the shards' shared attrs, with merge's own provenance on top.

    `predict_config` becomes the run the merged file stands for: the first shard's settings over
    every base the shards cover; `merged_from` lists each shard and what it contributed.
    """
    attrs = dict(shards[0].attrs)
    md5: dict[str, str] = {}
    for shard in shards:
        md5.update(json.loads(shard.attrs.get("contig_md5") or "{}"))
    predicted = [iv.to_region() for iv in IntervalSet().union(*(shard.covered for shard in shards))]
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        attrs["predict_config"] = json.dumps(json.loads(attrs["predict_config"]) | {
            "regions": predicted, "regions_bed": None, "out": config.out}, sort_keys=True)
    if "bases" in attrs:
        attrs["bases"] = sum(len(shard.covered) for shard in shards)
    if all("n_windows" in s.attrs for s in shards):
        attrs["n_windows"] = sum(int(s.attrs["n_windows"]) for s in shards)
    attrs.update(
        complete=False, genoformer_version=__version__, contig_md5=json.dumps(md5, sort_keys=True),
        command=command, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        merge_config=json.dumps(dataclasses.asdict(config)),
        merged_from=json.dumps([{"path": str(s.path.resolve()), "created": s.attrs.get("created"),
                                 "command": s.attrs.get("command"),
                                 "bases": {c: s.covered.bases(c) for c in s.lengths}}
                                for s in shards]),
    )
    return attrs


def _same_layout(src: h5py.Dataset, dst: h5py.Dataset) -> bool:
    """Whether src's stored chunks are valid chunks of dst as they are (same shape, dtype, filters)."""
    return (src.shape == dst.shape and src.dtype == dst.dtype and src.chunks == dst.chunks
            and src.compression == dst.compression and src.compression_opts == dst.compression_opts
            and src.shuffle == dst.shuffle and src.fletcher32 == dst.fletcher32 and src.scaleoffset == dst.scaleoffset)


def _write_contig(out: h5py.Group, contig: str, length: int, sources: list[tuple[Shard, h5py.Group]],
                  bar: tqdm) -> int:
    """Write /contigs/<contig> from the shards that have it; returns the bases covered.

    Works a chunk row range at a time.  A range that one shard covers entirely is copied as its
    stored, compressed chunks (no decompression: a whole-genome merge then runs at disk speed);
    ranges shared between shards, or partly covered, are decoded and combined base by base.
    """
    group = out.create_group(f"contigs/{contig}")
    template = sources[0][1]
    for k, v in template.attrs.items():
        group.attrs[k] = v
    names = ["covered"] + sorted(n for n in datasets(template) if n != "covered")
    targets = {}
    for name in names:
        src = template[name]
        ds = group.create_dataset(name, shape=src.shape, dtype=src.dtype, chunks=src.chunks or True,
                                  compression=src.compression, compression_opts=src.compression_opts,
                                  shuffle=src.shuffle, fillvalue=0)
        for k, v in src.attrs.items():
            ds.attrs[k] = v
        targets[name] = ds
    # attrs of task subgroups (e.g. /contigs/<c>/variant) travel too
    for name, obj in groups(template).items():
        group.require_group(name).attrs.update(obj.attrs)
    chunk_rows = {targets[n].chunks[0] for n in names}
    aligned = len(chunk_rows) == 1  # every dataset chunked by the same rows (as predict writes them)
    step = chunk_rows.pop() if aligned else _BLOCK
    raw = [aligned and all(_same_layout(g[n], targets[n]) for n in names) for _, g in sources]
    total = 0
    for start in range(0, length, step):
        end = min(start + step, length)
        touching, whole = [], None
        for k, (shard, _) in enumerate(sources):
            if shard.covered.overlaps(contig, start, end):
                touching.append(k)
                if shard.covered.contains(contig, start, end):
                    whole = k
        if not touching:
            continue
        if len(touching) == 1 and whole is not None and raw[whole]:
            shard, g = sources[whole]
            for name in names:
                offset = (start,) + (0,) * (targets[name].ndim - 1)
                with reading(shard.path, contig, name):
                    filter_mask, chunk = g[name].id.read_direct_chunk(offset)
                    if targets[name].compression == "gzip" and not filter_mask:
                        zlib.decompress(chunk)  # checks the stream and its adler32: no damage is copied on
                targets[name].id.write_direct_chunk(offset, chunk, filter_mask)
            covered = end - start
        else:
            masks = []
            for k in touching:
                with reading(sources[k][0].path, contig, "covered"):
                    masks.append(sources[k][1]["covered"][start:end])
            targets["covered"][start:end] = np.logical_or.reduce(masks)
            for name in names[1:]:
                block = np.zeros((end - start,) + targets[name].shape[1:], targets[name].dtype)
                for mask, k in zip(masks, touching):
                    with reading(sources[k][0].path, contig, name):
                        block[mask] = sources[k][1][name][start:end][mask]
                targets[name][start:end] = block
            covered = int(sum(int(m.sum()) for m in masks))
        total += covered
        bar.update(covered)
        raise_if_terminated()
    # written chunks still cached are written now, where a full disk raises, not when `targets` is
    # freed (a dataset's last close writes them, and an error there is only printed)
    out.file.flush()
    return total


def merge(config: MergeConfig, command: str | None = None) -> MergeResult:
    """Check the shards of `config` and write them as one predictions file at `config.out`.

    Raises InputError (naming the shard or shards) if they are incomplete, from different
    models, references or settings, overlap, or leave expected bases uncovered; OutputError if
    the output exists (without `force`) or cannot be written.  The output appears at
    `config.out` only once it is complete.
    """
    if not config.shards:
        raise UsageError("no shards to merge", hint="give one or more SHARD.h5 files")
    out = Path(config.out)
    inputs = {Path(s).resolve() for s in config.shards}
    if out.resolve() in inputs:
        raise UsageError(f"--out {out} is also one of the shards", hint="write the merged file to a new path")
    if len(inputs) != len(config.shards):
        raise UsageError("a shard is given twice", hint="list each shard file once")
    if out.exists() and not config.force:
        raise OutputError(f"{out}: already exists", hint="use --force to replace it")
    if not out.parent.is_dir():
        raise OutputError(f"{out.parent}: no such folder for the output")
    shards = [read_shard(s) for s in config.shards]
    check_consistent(shards)
    check_disjoint(shards)
    if config.expect_regions or config.expect_bed or config.expect_contigs:
        check_expected(shards, expected_intervals(config, reference_lengths(shards)))

    attrs = _provenance(shards, config, command or " ".join(sys.argv))
    lengths = {c: n for s in shards for c, n in s.lengths.items()}
    covered: dict[str, int] = {}
    # staged: a temp file beside `out`, fsynced and renamed onto it only if the block completes
    # (on SIGINT/SIGTERM too, the temp file is removed)
    with staged(out) as tmp, contextlib.ExitStack() as stack:
        handles = [stack.enter_context(h5py.File(s.path, "r")) for s in shards]
        # the shards' format (HDF5 1.10): attributes over 64 kB, such as a long region list, need it
        dst = stack.enter_context(hdf5_output(tmp, out, libver=LIBVER))
        for k, v in attrs.items():
            dst.attrs[k] = v
        dst.create_group("contigs")
        bar = stack.enter_context(tqdm(total=sum(len(sh.covered) for sh in shards),
                                       disable=not config.progress, unit="base", unit_scale=True,
                                       desc="merge", file=sys.stderr))
        for contig in lengths:
            sources = [(s, h[f"contigs/{contig}"]) for s, h in zip(shards, handles) if contig in s.lengths]
            covered[contig] = _write_contig(dst, contig, lengths[contig], sources, bar)
        dst.attrs["complete"] = True
    return MergeResult(out, len(shards), covered)
