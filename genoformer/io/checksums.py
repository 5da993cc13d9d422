"""md5 of contig sequences (upper-cased, the SAM @SQ M5 value), cached beside the FASTA's own scan.

Predictions record them and export/merge check them, so a file is never read against another reference.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from genoformer.interrupt import raise_if_terminated
from genoformer.io import fasta_scan
from genoformer.outputs import write_bytes

log = logging.getLogger(__name__)

MD5_CHUNK = 4_000_000  # bases per read while checksumming a contig (bounded memory)


def contig_md5(reference, contig: str) -> str:
    """md5 hex of the upper-cased contig sequence (the SAM @SQ M5 value), read in bounded chunks."""
    h = hashlib.md5()
    length = reference.contigs[contig]
    for start in range(0, length, MD5_CHUNK):
        raise_if_terminated()
        h.update(reference.fetch(contig, start, min(start + MD5_CHUNK, length)).tobytes().upper())
    return h.hexdigest()


def contig_md5s(reference, contigs: list[str]) -> dict[str, str]:
    """{contig: md5}, cached beside the FASTA's scan (keyed by path, size and mtime): a 3 Gb genome is read once."""
    path = Path(reference.path)
    st = path.stat()
    key = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    cache = fasta_scan.cached_path(path, ".md5.json")
    try:
        known = json.loads(cache.read_text())
        known = known["md5"] if all(known.get(k) == v for k, v in key.items()) else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        known = {}
    missing = [c for c in contigs if c not in known]
    if missing:
        known = known | {c: contig_md5(reference, c) for c in missing}
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(cache, json.dumps(key | {"md5": known}).encode())
        except OSError as e:  # a cache only: the caller goes on without it
            log.debug("cannot cache contig checksums in %s (%s)", cache, e)
    return {c: known[c] for c in contigs}
