"""Predictions HDF5 -> VCF (variant files) and BED / bedGraph (per-class probability tracks).

`export` checks every output path first, finds the covered bases (inside `regions`, when given)
and hands them, a block of bases at a time, to the writers: genoformer.predict.export_vcf (calls,
with how a base becomes a record) and genoformer.predict.export_bed (thresholded runs and
probability tracks). Outputs ending in .gz are bgzipped and tabix-indexed. Every output is
written under a temporary name and renamed when complete; an existing output is replaced only
with `force`. The file is read a block of bases at a time, so memory does not grow with the contig.
"""
from __future__ import annotations

import logging
import re
import shlex
import sys
from pathlib import Path

from genoformer.errors import OutputError, UsageError
from genoformer.io.predictions import PredictionsFile, open_predictions
from genoformer.outputs import refuse_existing
from genoformer.predict.export_bed import export_bed, export_bedgraph
from genoformer.predict.export_config import ExportConfig
from genoformer.predict.export_vcf import export_vcf

log = logging.getLogger(__name__)

BLOCK = 1 << 20  # bases read at a time (a multiple of the file's chunk length)


def _make_folder(path: str | None) -> None:
    """Create an output's folder, as predict does for its --out."""
    if not path:
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{path}: cannot create its folder {Path(path).parent} ({e.strerror or e})") from None


def export(config: ExportConfig, command: str | None = None) -> dict:
    """Write the outputs of `config`; returns a summary (counts per output)."""
    outputs = [p for p in (config.vcf, config.bed) if p]
    for path in [*outputs, config.bedgraph]:
        _make_folder(path)
    for path in outputs:
        refuse_existing(path, config.force)
    with open_predictions(config.predictions) as preds:
        classes = _chosen_classes(preds, config)
        bedgraphs = _bedgraph_paths(config.bedgraph, classes) if config.bedgraph else {}
        for path in bedgraphs.values():
            refuse_existing(path, config.force)
        blocks = preds.covered_blocks(config.regions, BLOCK)
        if not blocks:
            log.warning("%s: no covered bases%s; the outputs hold no records", preds.path,
                        " in the regions given" if config.regions else "")
        command = command or shlex.join(["genoformer", *sys.argv[1:]])
        summary: dict = {"predictions": str(preds.path)}
        if config.vcf:
            summary["vcf"] = export_vcf(preds, config, blocks, command, BLOCK)
        if config.bed:
            summary["bed"] = export_bed(preds, config, classes, blocks, command)
        for name, path in bedgraphs.items():
            summary.setdefault("bedgraph", {})[name] = export_bedgraph(preds, config, name, path, blocks)
    return summary


def _chosen_classes(preds: PredictionsFile, config: ExportConfig) -> list[str]:
    unknown = [c for c in config.classes if c not in preds.classes]
    if unknown:
        raise UsageError(f"{preds.path}: no class {', '.join(unknown)} (classes: {', '.join(preds.classes)})")
    return list(dict.fromkeys(config.classes)) or list(preds.classes)


def _bedgraph_paths(path: str, classes: list[str]) -> dict[str, Path]:
    """One bedGraph per class: `path` itself for one class, else the class name before the suffix."""
    path = Path(path)
    if len(classes) == 1:
        return {classes[0]: path}
    for suffix in (".bedgraph.gz", ".bedGraph.gz", ".bg.gz", ".bedgraph", ".bedGraph", ".bg"):
        if path.name.endswith(suffix):
            stem = path.name[:-len(suffix)]
            break
    else:
        stem, suffix = path.name, ""
    # class names come from BED file names and GFF feature types: any character a file name cannot
    # hold safely (a "/", a space) becomes "_"
    paths = {c: path.with_name(f"{stem}.{re.sub(r'[^A-Za-z0-9._+-]', '_', c)}{suffix}") for c in classes}
    by_path: dict[Path, list[str]] = {}
    for c, p in paths.items():
        by_path.setdefault(p, []).append(c)
    clash = next((names for names in by_path.values() if len(names) > 1), None)
    if clash:
        raise UsageError(f"classes {' and '.join(map(repr, clash))} would share the bedGraph file "
                         f"{paths[clash[0]].name}", hint="export them one at a time with --class")
    return paths
