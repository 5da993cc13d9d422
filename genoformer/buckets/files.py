"""The files of `genoformer buckets`: buckets.h5, buckets.bed(.gz) and summary.tsv (layout in docs/buckets.md).

Each is written under a temporary name in the output folder and renamed when complete; buckets.h5
also carries `complete` = False until its last dataset is written, and `read_buckets` refuses
anything else, as for predictions.
"""
from __future__ import annotations

import json
import math
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from genoformer import __version__
from genoformer.buckets.map import BucketMap, bucket_rgb
from genoformer.coords import Interval
from genoformer.errors import InputError, OutputError
from genoformer.outputs import hdf5_output, staged, staged_text, write_bytes
from genoformer.data.windows import Window

FORMAT, FORMAT_VERSION = "genoformer-buckets", 1


def write_h5(bmap: BucketMap, path: str | os.PathLike, *, top_k: int, config: dict | None = None) -> Path:
    """buckets.h5: bucket ids per layer/head/round, top attended tokens per layer/head, coordinates."""
    path = Path(path)
    model = bmap.model
    try:
        with staged(path) as tmp:
            # no chunk cache: each dataset is written as it is created, so a full disk raises there,
            # not when the dataset object is freed (where HDF5's error is only printed)
            with hdf5_output(tmp, path, rdcc_nbytes=0) as f:
                a = f.attrs
                a.update({"format": FORMAT, "format_version": FORMAT_VERSION, "complete": False,
                          "genoformer_version": __version__, "created": datetime.now(timezone.utc).isoformat(),
                          "command": " ".join(sys.argv), "hash_seed": bmap.hash_seed,
                          "model_sha256": model.get("sha256", ""), "model_path": model.get("path", ""),
                          "model": json.dumps({key: model.get(key) for key in
                                               ("task", "model_config", "tokenizer", "head")}, sort_keys=True),
                          "reference": model.get("reference", ""), "bam": model.get("bam", ""),
                          "window": int(model.get("train_window", len(bmap.window))), "contig": bmap.contig,
                          "window_start": bmap.window.start, "window_end": bmap.window.end,
                          "window_n_valid": bmap.window.n_valid, "region": bmap.region.to_region(),
                          "region_start": bmap.region.start, "region_end": bmap.region.end, "k": bmap.k,
                          "stride": bmap.stride, "bucket_size": bmap.bucket_size, "n_buckets": bmap.n_buckets,
                          "causal": bmap.causal, "top_k": int(top_k), "layers": np.array(bmap.layers),
                          "heads": np.array(bmap.heads), "rounds": np.array(bmap.rounds),
                          "sequence_md5": bmap.sequence_md5,
                          "buckets_config": json.dumps(config or {}, sort_keys=True, default=str)})
                opts = {"compression": "gzip", "shuffle": True}
                for name, values in (("start", bmap.token_start), ("end", bmap.token_end),
                                     ("owned_start", bmap.owned_start), ("owned_end", bmap.owned_end)):
                    f.create_dataset(f"tokens/{name}", data=values.astype(np.int64), **opts)
                f.create_dataset("tokens/id", data=bmap.token_ids.astype(np.int32), **opts)
                f.create_dataset("tokens/in_region", data=bmap.region_tokens(), **opts)
                for li, layer in enumerate(bmap.layers):
                    for hi, head in enumerate(bmap.heads):
                        for ri, round_ in enumerate(bmap.rounds):
                            ds = f.create_dataset(f"buckets/{bmap.name(layer, head, round_)}",
                                                  data=bmap.buckets[li, hi, ri], **opts)
                            ds.attrs.update({"layer": layer, "head": head, "round": round_})
                        group = f.create_group(f"attention/{bmap.name(layer, head)}")
                        group.attrs.update({"layer": layer, "head": head})
                        group.create_dataset("tokens", data=bmap.top_tokens[li, hi], **opts)
                        group.create_dataset("weights", data=bmap.top_weights[li, hi], **opts)
                a["complete"] = True
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    return path


def read_buckets(path: str | os.PathLike) -> BucketMap:
    """The BucketMap stored in a complete buckets.h5 (InputError naming the file otherwise)."""
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        a = f.attrs
        if a.get("format") != FORMAT:
            raise InputError(f"{path}: not a genoformer buckets file (format {a.get('format')!r})")
        if int(a.get("format_version", -1)) != FORMAT_VERSION:
            raise InputError(f"{path}: buckets format_version {a.get('format_version')!r} is not supported "
                             f"(this genoformer reads {FORMAT_VERSION})")
        if not bool(a.get("complete", False)):
            raise InputError(f"{path}: incomplete (the run that wrote it did not finish)")
        layers, heads, rounds = (a[key].tolist() for key in ("layers", "heads", "rounds"))
        buckets = np.stack([np.stack([np.stack([f[f"buckets/L{layer}.H{head}.R{round_}"][()] for round_ in rounds])
                                      for head in heads]) for layer in layers])
        top = {name: np.stack([np.stack([f[f"attention/L{layer}.H{head}/{name}"][()] for head in heads])
                               for layer in layers]) for name in ("tokens", "weights")}
        model = json.loads(a["model"]) | {"path": a["model_path"], "sha256": a["model_sha256"],
                                          "reference": a["reference"], "bam": a["bam"],
                                          "train_window": int(a["window"])}
        contig = str(a["contig"])
        return BucketMap(region=Interval(contig, int(a["region_start"]), int(a["region_end"])),
                         window=Window(contig, int(a["window_start"]), int(a["window_end"]), int(a["window_n_valid"])),
                         k=int(a["k"]), stride=int(a["stride"]), bucket_size=int(a["bucket_size"]),
                         n_buckets=int(a["n_buckets"]), causal=bool(a["causal"]), hash_seed=int(a["hash_seed"]),
                         layers=layers, heads=heads, rounds=rounds, token_start=f["tokens/start"][()],
                         token_end=f["tokens/end"][()], owned_start=f["tokens/owned_start"][()],
                         owned_end=f["tokens/owned_end"][()], token_ids=f["tokens/id"][()].astype(np.int64),
                         buckets=buckets, top_tokens=top["tokens"], top_weights=top["weights"],
                         sequence_md5=str(a["sequence_md5"]), model=model)


def bed_lines(bmap: BucketMap) -> list[str]:
    """BED9 lines, sorted by position then name: runs of region bases in one bucket, named L.H.R.B."""
    records = []
    for layer in bmap.layers:
        for head in bmap.heads:
            for round_ in bmap.rounds:
                prefix = bmap.name(layer, head, round_)
                for start, end, bucket in zip(*(v.tolist() for v in bmap.runs(layer, head, round_))):
                    records.append((start, end, f"{prefix}.B{bucket}", bucket))
    records.sort(key=lambda r: (r[0], r[1], r[2]))
    rgb = [",".join(str(round(255 * c)) for c in row) for row in bucket_rgb(bmap.n_buckets)]  # as in the plots
    return [f"{bmap.contig}\t{s}\t{e}\t{name}\t0\t.\t{s}\t{e}\t{rgb[b]}\n" for s, e, name, b in records]


def write_bed(bmap: BucketMap, path: str | os.PathLike, *, bgzip: bool = False) -> list[Path]:
    """buckets.bed, or with bgzip buckets.bed.gz plus its tabix index; returns the paths written."""
    path = Path(path)
    text = "".join(bed_lines(bmap)).encode()
    if not bgzip:
        return [write_bytes(path, text)]
    with staged_text(path, "bed", ".bed") as plain:
        plain.write_bytes(text)
    return [path, Path(f"{path}.tbi")]


def _cell(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NA"
        return f"{value:.6g}"
    return str(value)


def write_summary(rows: list[dict], path: str | os.PathLike) -> Path:
    """summary.tsv: a header line, then one tab-separated row per layer/head/round (NA: undefined)."""
    path = Path(path)
    header = list(rows[0]) if rows else []
    lines = ["\t".join(header)] + ["\t".join(_cell(row[key]) for key in header) for row in rows]
    return write_bytes(path, ("\n".join(lines) + "\n").encode())
