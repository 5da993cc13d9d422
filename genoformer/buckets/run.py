"""LSH buckets over a genomic region: which tokens each LSH layer hashes together, in genomic coordinates.

The model reads ONE window of its training length W (the checkpoint's train_config.window) that
contains the region: W bases centred on the region, clipped to the contig (a contig shorter than
W gives one window padded at its end, as in training). So the buckets are those the model uses on
a full window (bucket counts follow the number of real tokens, so a short window would hash into
fewer, different buckets), and queries in the region see keys anywhere in that window. `genoformer
buckets` cuts a region longer than W into consecutive pieces of W bases, one window each: buckets of
different windows never meet, so each window's files go to their own folder (window_1/, ...) and the
picture draws the windows side by side with their boundaries marked. The window start is moved down
to a multiple of the token stride when the region still fits, so tokens sit on the contig's k-mer
grid (that of whole-contig windows).

Token i of a window starting at s covers bases [s + i*stride, s + i*stride + k) and owns the last
`stride` of them (token 0 owns its k; tokenize.py), so every base has one bucket: its owner's.
Per-base inputs (the stem's bases, soft mask and read evidence with --bam; or the per-token
evidence fusion of older models) enter the embedding exactly as in the model's forward pass
(GenoModel's embedding hook), so these are the buckets the model actually used.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from genoformer.coords import Interval, check_interval, split_region
from genoformer.errors import InputError, OutputError, UsageError
from genoformer.buckets.map import BucketMap
from genoformer.data.windows import Window
from genoformer.devices import resolve_device

log = logging.getLogger(__name__)


def analysis_window(region: Interval, window: int, contig_length: int, stride: int) -> Window:
    """The one model window holding `region` (see the module docstring); UsageError if it cannot."""
    if len(region) > window:
        raise UsageError(f"region {region.to_region()} is {len(region):,} bases, longer than the model's window "
                         f"of {window:,} bases", hint=f"give a region of at most {window:,} bases: the model "
                         "reads one window at a time, and buckets of different windows never meet")
    start = max(0, min(region.start - (window - len(region)) // 2, contig_length - window))
    aligned = start - start % stride
    if aligned + window >= region.end:
        start = aligned
    return Window(region.contig, start, start + window, min(window, contig_length - start))


def parse_position(text: str, contig_lengths: dict[str, int]) -> tuple[str, int]:
    """A `--query` such as "chr20:10,005,000" (1-based) -> (contig, 0-based position)."""
    contig, beg, end = split_region(text)
    if beg is None or (end is not None and end != beg):
        raise UsageError(f"bad query {text!r}: give one base, CONTIG:POSITION (1-based), e.g. chr20:10,005,000")
    return contig, check_interval(contig, beg - 1, beg, contig_lengths, "query").start


def _selection(what: str, asked: list[int] | None, available: list[int], count: int) -> list[int]:
    if asked is None or not len(asked):
        return list(available)
    chosen = sorted(set(int(v) for v in asked))
    for value in chosen:
        if not 0 <= value < count:
            raise UsageError(f"{what} {value} is out of range: the model has {count} {what}s "
                             f"(0-{count - 1}, 0-based)")
        if value not in available:
            raise UsageError(f"{what} {value} is not an LSH layer; the model's LSH layers are "
                             f"{', '.join(map(str, available))}")
    return chosen


def load_model(path: str | os.PathLike, device: str = "cpu", hash_seed: int = 0):
    """(model, meta) of a run or checkpoint folder, its LSH rotations fixed by `hash_seed` (layer i:
    hash_seed + i); refuses models without LSH layers (InputError)."""
    from genoformer.model.checkpoint import load_checkpoint, resolve

    model, meta, _ = load_checkpoint(path, device=resolve_device(device), hash_seed=hash_seed)
    kinds = model.encoder.config.attention_kinds
    if "lsh" not in kinds:
        raise InputError(f"{resolve(path)}: the model has no LSH layers (attention: {', '.join(kinds)}), "
                         "so it hashes nothing into buckets",
                         hint="inspect a model trained with --attention lsh (or a list holding lsh)")
    return model.eval(), meta


def bucket_map(model_path: str | os.PathLike, reference: str | os.PathLike, region: str | Interval, *,
               bam: str | os.PathLike | None = None, layers: list[int] | None = None,
               heads: list[int] | None = None, rounds: list[int] | None = None, hash_seed: int = 0,
               top_k: int = 8, device: str = "cpu", model=None) -> BucketMap:
    """Run the model over the window holding `region` and record its LSH buckets (see BucketMap).

    `model` takes an already loaded (model, meta) pair from `load_model(..., hash_seed=hash_seed)` to
    skip reloading.
    """
    from genoformer.data.datasets import WindowDataset
    from genoformer.io.alignments import Alignments
    from genoformer.io.fasta import Reference
    from genoformer.model.checkpoint import resolve
    from genoformer.model.heads import batch_inputs

    for name, value, low in (("hash seed", hash_seed, 0), ("top-k", top_k, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise UsageError(f"{name} must be an integer >= {low}, got {value!r}")
    net, meta = model if model is not None else load_model(model_path, device, int(hash_seed))
    if net.encoder.config.hash_seed != hash_seed:
        raise UsageError(f"the model given was loaded with hash seed {net.encoder.config.hash_seed}, not {hash_seed}",
                         hint="load it with load_model(path, device, hash_seed)")
    config, tokenizer = net.encoder.config, net.tokenizer
    layers = _selection("layer", layers, net.encoder.lsh_layers(), config.depth)
    heads = _selection("head", heads, list(range(config.heads)), config.heads)
    rounds = _selection("round", rounds, list(range(config.n_hashes)), config.n_hashes)
    if net.n_evidence and bam is None:
        raise UsageError("this model fuses read evidence (it was trained with --bam); give --bam")
    if not net.n_evidence and bam is not None:
        raise UsageError("this model was trained without reads; leave out --bam")
    try:
        size = int(meta["train_config"]["window"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{model_path}: the checkpoint does not record its training window") from None

    ref = Reference(reference)
    interval = region if isinstance(region, Interval) else ref.region(region)
    window = analysis_window(interval, size, ref.contigs[interval.contig], tokenizer.stride)
    alignments = Alignments(bam, ref) if bam is not None else None
    item = WindowDataset(ref, [window], tokenizer, alignments=alignments)[0]
    device_ = next(net.parameters()).device
    tokens, mask = item["tokens"][None].to(device_), item["token_mask"][None].to(device_)
    n = int(item["token_mask"].sum())
    starts, ends = tokenizer.token_spans(n, window.start)
    owner = tokenizer.token_of_base(window.n_valid)
    owned_start = window.start + np.searchsorted(owner, np.arange(n), side="left")
    owned_end = window.start + np.searchsorted(owner, np.arange(n), side="right")
    # owned spans tile the window in token order, so the region's tokens are one run [first, stop)
    first, stop = np.searchsorted(owned_end, interval.start, side="right"), np.searchsorted(owned_start, interval.end)

    with torch.no_grad():
        inputs = batch_inputs({key: value[None] for key, value in item.items() if isinstance(value, torch.Tensor)},
                              device_)
        extra, _ = net.embedding_extra(tokens, inputs.get("evidence"), inputs.get("bases"), inputs.get("soft_mask"),
                                       inputs["valid"])
        with net._extra_embedding(extra):  # the per-base inputs enter exactly as in forward
            # top keys for the region's tokens only: their search dominates, and scales with the queries
            found = net.encoder.inspect(tokens, mask, layers=layers, top_k=top_k, queries=(first, stop))

    hi, ri = torch.tensor(heads), torch.tensor(rounds)
    buckets = np.stack([found[i].buckets[0][hi][:, ri, :n].cpu().numpy() for i in layers]).astype(np.int32)
    if (buckets < 0).any():
        raise RuntimeError("a real token has no bucket")  # the LSH layer's invariant; a bug if broken
    top_tokens = np.full((len(layers), len(heads), n, top_k), -1, dtype=np.int32)
    top_weights = np.zeros((len(layers), len(heads), n, top_k), dtype=np.float32)
    top_tokens[:, :, first:stop] = np.stack([found[i].top_positions[0][hi].cpu().numpy() for i in layers])
    top_weights[:, :, first:stop] = np.stack([found[i].top_weights[0][hi].cpu().numpy() for i in layers])
    seq = ref.fetch(window.contig, window.start, window.valid_end)
    upper = np.where((seq >= 97) & (seq <= 122), seq - 32, seq).astype(np.uint8)
    provenance = {"path": str(resolve(model_path).resolve()),
                  "sha256": meta.get("weights_sha256", ""), "task": meta.get("task", ""),
                  "model_config": config.to_dict(), "tokenizer": tokenizer.to_dict(), "head": meta.get("head", {}),
                  "train_window": size, "reference": str(Path(reference).resolve()),
                  "bam": str(Path(bam).resolve()) if bam is not None else ""}
    return BucketMap(region=interval, window=window, k=tokenizer.k, stride=tokenizer.stride,
                     bucket_size=config.bucket_size, n_buckets=int(found[layers[0]].n_buckets),
                     causal=config.causal, hash_seed=int(hash_seed), layers=layers, heads=heads, rounds=rounds,
                     token_start=starts, token_end=np.minimum(ends, window.valid_end),
                     owned_start=owned_start.astype(np.int64), owned_end=owned_end.astype(np.int64),
                     token_ids=item["tokens"][:n].numpy(), buckets=buckets, top_tokens=top_tokens,
                     top_weights=top_weights, sequence_md5=hashlib.md5(upper.tobytes()).hexdigest(),
                     model=provenance)


OUTPUT_NAMES = ("buckets.h5", "buckets.bed", "buckets.bed.gz", "buckets.bed.gz.tbi", "summary.tsv",
                "buckets.png", "buckets.svg", "config.json")


@dataclass
class BucketsConfig:
    """What `genoformer buckets` does; saved as config.json beside its outputs."""
    model: str
    reference: str
    region: str
    out: str = "buckets"
    bam: str | None = None
    layers: list[int] | None = None  # default: every LSH layer (0-based model layer indices)
    heads: list[int] | None = None  # default: all
    rounds: list[int] | None = None  # hashing rounds; default: all
    queries: list[str] = field(default_factory=list)  # CONTIG:POSITION, 1-based
    tracks: list[str] = field(default_factory=list)  # BED/GFF/GTF/UCSC annotation files
    hash_seed: int = 0
    top_k: int = 8
    device: str = "auto"
    plots: bool = True
    bgzip: bool = False  # buckets.bed.gz + .tbi instead of buckets.bed
    force: bool = False


def _check_out(out: Path, force: bool) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out}: cannot create the output folder ({e.strerror or e})") from None
    existing = [name for name in OUTPUT_NAMES if (out / name).exists()] + \
        sorted(p.name for pattern in ("query_*", "window_*") for p in out.glob(pattern))
    if existing and not force:
        raise OutputError(f"{out}: already holds buckets outputs ({', '.join(existing[:3])})",
                          hint="pass --force to overwrite them, or give another --out")


def run_buckets(config: BucketsConfig) -> dict[str, list[Path]]:
    """Compute the BucketMap and write every output of `genoformer buckets`; returns {what: paths}."""
    from genoformer.io.fasta import Reference
    from genoformer.io.tracks import Tracks
    from genoformer.tokenize import soft_mask

    if config.plots:
        from genoformer.buckets.plots import require_matplotlib

        require_matplotlib()
    out = Path(config.out)
    _check_out(out, config.force)
    net, meta = load_model(config.model, config.device, config.hash_seed)
    ref = Reference(config.reference)
    region = ref.region(config.region)
    queries = [parse_position(q, ref.contigs) for q in config.queries]
    for contig, position in queries:
        if contig != region.contig or not region.start <= position < region.end:
            raise UsageError(f"query {contig}:{position + 1:,} is outside the region {region.to_region()}")
    annotation = Tracks.from_files(config.tracks, ref.contigs) if config.tracks else None

    def masks(iv: Interval) -> dict[str, np.ndarray]:
        """name -> bool per base of `iv`: soft-masked bases, then each annotation class."""
        found = {"soft_masked": soft_mask(ref.fetch_interval(iv))}
        if annotation is not None:
            per_class = annotation.mask(iv.contig, iv.start, iv.end)
            found |= {re.sub(r"\s+", "_", name): per_class[:, i] for i, name in enumerate(annotation.class_names)}
        return found

    written: dict[str, list[Path]] = {}
    try:
        _write_outputs(config, (net, meta), ref, region, queries, masks, out, written)
    except BaseException:
        # a failed run (a full disk, an interrupt) leaves none of its files: a set of outputs with
        # some missing would look like a finished run's
        for path in (p for paths in written.values() for p in paths):
            path.unlink(missing_ok=True)
        for folder in out.glob("window_*"):
            with contextlib.suppress(OSError):  # only the folders left empty
                folder.rmdir()
        raise
    return written


def _write_outputs(config: BucketsConfig, model: tuple, ref, region: Interval, queries: list, masks,
                   out: Path, written: dict[str, list[Path]]) -> None:
    """Write every output file into `out` (a region longer than the model's window: one window_N/ folder per
    window, the plots drawing them side by side), recording each file in `written` as soon as it is there."""
    from genoformer.buckets import files as bucket_files
    from genoformer.buckets.stats import summarize

    size = int(model[1]["train_config"]["window"])
    pieces = [Interval(region.contig, s, min(s + size, region.end)) for s in range(region.start, region.end, size)]
    tracks = masks(region)
    settings = dataclasses.asdict(config)
    bmaps = []
    for i, piece in enumerate(pieces, start=1):
        bmap = bucket_map(config.model, config.reference, piece, bam=config.bam, layers=config.layers,
                          heads=config.heads, rounds=config.rounds, hash_seed=config.hash_seed, top_k=config.top_k,
                          model=model)
        window = bmap.window
        log.info("%s: read in the model's window %s (%s bases, %s real; %d tokens, %d buckets per round)",
                 piece.to_region(), Interval(window.contig, window.start, window.end).to_region(),
                 f"{len(window):,}", f"{window.n_valid:,}", bmap.n_tokens, bmap.n_buckets)
        folder = out if len(pieces) == 1 else out / f"window_{i}"
        folder.mkdir(exist_ok=True)
        part = slice(piece.start - region.start, piece.end - region.start)
        suffix = "" if len(pieces) == 1 else f" window {i}"
        written[f"h5{suffix}"] = [bucket_files.write_h5(bmap, folder / "buckets.h5", top_k=config.top_k,
                                                        config=settings)]
        written[f"bed{suffix}"] = bucket_files.write_bed(
            bmap, folder / ("buckets.bed.gz" if config.bgzip else "buckets.bed"), bgzip=config.bgzip)
        written[f"summary{suffix}"] = [bucket_files.write_summary(
            summarize(bmap, {name: mask[part] for name, mask in tracks.items()}), folder / "summary.tsv")]
        bmaps.append(bmap)
    if config.plots:
        from genoformer.buckets import plots

        written["plot"] = plots.track_plot(bmaps, tracks, out / "buckets", sequence=ref.fetch_interval(region))
        for contig, position in queries:
            bmap = next(b for b in bmaps if b.region.start <= position < b.region.end)
            seen = Interval(contig, bmap.window.start, bmap.window.valid_end)
            written[f"query {contig}:{position + 1}"] = plots.query_plot(
                bmap, position, plots.query_stem(out, contig, position), tracks=masks(seen),
                sequence=ref.fetch_interval(seen))
    settings_json = (json.dumps(settings, indent=2) + "\n").encode()
    written["config"] = [bucket_files.write_bytes(out / "config.json", settings_json)]
