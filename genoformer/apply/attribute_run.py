"""`genoformer attribute`: ISM and gradient x input over a region (attribute.py), to HDF5, bedGraph and PNG.

Files, for the prefix OUT, each written under a temporary name and renamed only when complete:
  OUT.h5                         format "genoformer-attributions" 1: reference [L] (ASCII), mutated [L],
                                 ism and grad_input float32 [L, 4, C] (changes to A, C, G, T),
                                 importance/<method> [L, C], baseline [C] (f of the reference);
                                 attributes: region, classes, window, margin, provenance
  OUT.<method>.<class>.bedgraph  per-base importance (0-based, half-open)
  OUT.<class>.logo.png           the logo picture (logo.py) of ism importance (else grad_input's)
"""
from __future__ import annotations

import contextlib
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from genoformer.apply import attribute as attr
from genoformer.apply.logo import draw_logo, require_matplotlib
from genoformer.apply.model import AppliedModel, check_dna, load_model, refuse_reads
from genoformer.apply.provenance import provenance
from genoformer.coords import Interval
from genoformer.devices import default_batch
from genoformer.errors import UsageError
from genoformer.io.checksums import contig_md5s
from genoformer.outputs import hdf5_output, refuse_existing, staged
from genoformer.predict.grid import grid_step

FORMAT, FORMAT_VERSION = "genoformer-attributions", 1
MAX_REGION = 10_000
METHODS = ("ism", "grad_input")
_FILE_NAME = re.compile(r"[^0-9A-Za-z_.-]")


@dataclass
class AttributeConfig:
    model: str = ""
    reference: str = ""
    region: str = ""  # samtools-style, 1-based; at most MAX_REGION bases
    out: str = "attributions"  # prefix
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    classes: list[str] = field(default_factory=list)  # none: every class of the model
    window: int | None = None  # per-base models: None, the training window
    margin: int | None = None  # per-base models: None, window // 4 (as predict)
    batch_size: int | None = None
    device: str = "auto"
    hash_seed: int = 0
    logo: bool = True
    logo_width: int = 40
    force: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not (self.model and self.reference and self.region):
            raise UsageError("give a model (--model), a reference (--reference) and a region (--region)")
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise UsageError(f"method must be among {', '.join(METHODS)}, got {', '.join(unknown) or 'none'}")
        for name, low in (("window", 1), ("margin", 0), ("batch_size", 1), ("logo_width", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise UsageError(f"{name.replace('_', '-')} must be an integer >= {low}, got {value!r}")


def output_paths(out: str, methods: list[str], classes: list[str], logo: bool) -> dict[str, Path]:
    """{what: path} of every file a run writes."""
    names = {c: _FILE_NAME.sub("_", c) for c in classes}
    paths = {"h5": Path(f"{out}.h5")}
    paths |= {f"{m}.{c}": Path(f"{out}.{m}.{names[c]}.bedgraph") for m in methods for c in classes}
    if logo:
        paths |= {f"logo.{c}": Path(f"{out}.{names[c]}.logo.png") for c in classes}
    return paths


def _check_model(am: AppliedModel) -> None:
    refuse_reads(am, "attribute")
    check_dna(am, "attribute")
    if am.task == "mlm":
        raise UsageError(f"{am.path}: an mlm model has no classes to attribute",
                         hint="score a variant's zero-shot effect with `genoformer score-variants`")


def _region(am: AppliedModel, reference, text: str) -> Interval:
    region = reference.region(text)
    if len(region) > MAX_REGION:
        raise UsageError(f"region {text} is {len(region):,} bases; attribute takes at most {MAX_REGION:,}",
                         hint="split it into smaller regions")
    if not am.per_base and am.window is not None and len(region) > am.window:
        raise UsageError(f"region {text} is {len(region):,} bases, longer than the sequences the classify "
                         f"model accepts ({am.window:,})")
    return region


def _grid(am: AppliedModel, config: AttributeConfig, region: Interval) -> tuple[int, int, int]:
    """(window, margin, step) of the windows f sums over; a classify model reads the region as one sequence."""
    if not am.per_base:
        return len(region), 0, len(region)
    window = config.window or am.window
    if not window:
        raise UsageError(f"{am.path}: the checkpoint records no training window; give --window")
    stride = am.tokenizer.stride
    margin = config.margin if config.margin is not None else window // 4 // stride * stride
    return window, margin, grid_step(window, margin, stride)


def run_attribute(config: AttributeConfig) -> dict:
    """Attribute config.region, write the files and return a summary (paths, seconds)."""
    from genoformer.io.fasta import Reference

    started = time.perf_counter()
    am = load_model(config.model, config.device, config.hash_seed)
    _check_model(am)
    classes = config.classes or am.classes
    missing = [c for c in classes if c not in am.classes]
    if missing:
        raise UsageError(f"class {missing[0]!r} is not one of the model's: {', '.join(am.classes)}")
    paths = output_paths(config.out, config.methods, classes, config.logo)
    for path in paths.values():
        refuse_existing(path, config.force)
    if config.logo:
        require_matplotlib()
    with Reference(config.reference) as reference:
        region = _region(am, reference, config.region)
        window, margin, step = _grid(am, config, region)
        inputs = attr.targets(am, reference, region, window, margin, step)
        bases = reference.fetch(region.contig, region.start, region.end)
        md5 = contig_md5s(reference, [region.contig])[region.contig]
    is_mutated = attr.mutated(bases)
    batch = config.batch_size or default_batch(inputs[0].n_bases, am.device)
    results, baseline, bases_run = {}, None, 0
    if "ism" in config.methods:
        total = sum(sum(1 for _ in attr.changes(t, region)) for t in inputs)
        with tqdm(total=total, unit="change", desc="ism", disable=not config.progress, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            results["ism"], baseline, bases_run = attr.ism(am, region, inputs, batch, bar.update)
    if "grad_input" in config.methods:
        results["grad_input"] = np.where(is_mutated[:, None, None], attr.grad_input(am, region, inputs), 0)
    attrs = provenance(am, config, {}) | {
        "reference": str(Path(config.reference).resolve()), "contig_md5": md5, "region": region.to_region(),
        "window": window, "margin": margin,
        "methods": list(results)}
    _write(paths, config, am, region, bases, is_mutated, results, baseline, attrs, classes)
    seconds = time.perf_counter() - started
    return {"region": region.to_region(), "task": am.task, "methods": list(results), "classes": classes,
            "windows": len(inputs), "ism_bases_run": bases_run, "files": [str(p) for p in paths.values()],
            "seconds": seconds}


def _write(paths, config, am, region, bases, is_mutated, results, baseline, attrs, classes) -> None:
    pick = [am.classes.index(c) for c in classes]
    importance = {m: attr.importance(v, is_mutated)[:, pick] for m, v in results.items()}
    with contextlib.ExitStack() as stack:
        tmp = {what: stack.enter_context(staged(path, path.suffix)) for what, path in paths.items()}
        with hdf5_output(tmp["h5"], paths["h5"]) as f:
            f.attrs.update(attrs | {"format": FORMAT, "format_version": FORMAT_VERSION, "classes": classes,
                                    "bases": "ACGT", "complete": False})
            f["reference"] = bases
            f["mutated"] = is_mutated
            for method, values in results.items():
                f[method] = values[..., pick]
                f[f"importance/{method}"] = importance[method]
            if baseline is not None:
                f["baseline"] = baseline[pick]
            f.attrs["complete"] = True
        positions = np.arange(region.start, region.end)
        for method, values in importance.items():
            for i, c in enumerate(classes):
                with open(tmp[f"{method}.{c}"], "w") as fh:
                    fh.writelines(f"{region.contig}\t{p}\t{p + 1}\t{v:.6g}\n" for p, v in zip(positions, values[:, i]))
        if config.logo:
            shown = "ism" if "ism" in importance else "grad_input"
            for i, c in enumerate(classes):
                draw_logo(tmp[f"logo.{c}"], bases, importance[shown][:, i], region.start, region.contig,
                          f"{c}: {shown} importance over {region.to_region()}", config.logo_width)
