"""The window a variant is scored in, for each of its alleles.

An allele's window is cut from the genome carrying that allele, G_allele = G[:pos] + allele +
G[pos + len(REF):], centred on the allele: it starts at pos - (window - len(allele)) // 2, shifted
inside G_allele where that would run past a contig end (never dropped), and is the whole contig
(shorter than the window, padded like predict's last window) where the contig is shorter.

So the reference window is G's own, and the alternate window is the reference window with the
allele substituted and re-centred: both see the same flanking bases (less the length change),
and the windows of REF -> ALT on G are exactly those of ALT -> REF on G_alt, which is what makes
every score antisymmetric.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AlleleWindow:
    """Bases of one allele's window (uint8 ASCII, at most `window` long) and where the allele sits in it."""
    bases: np.ndarray
    start: int  # 0-based start on G_allele (equal to G's coordinates up to pos)
    allele_start: int  # offset of the allele in `bases`
    allele_end: int

    @property
    def allele(self) -> slice:
        return slice(self.allele_start, self.allele_end)


def allele_window(reference, contig: str, pos: int, ref_len: int, allele: str, window: int) -> AlleleWindow:
    """The window of `allele` replacing G[pos:pos + ref_len] (see the module docstring); len(allele) <= window."""
    length = reference.contigs[contig] - ref_len + len(allele)  # of G_allele
    start = min(max(pos - (window - len(allele)) // 2, 0), max(length - window, 0))
    end = min(start + window, length)
    after = end - (pos + len(allele))  # bases of G after the allele
    bases = np.concatenate([reference.fetch(contig, start, pos), np.frombuffer(allele.encode(), np.uint8),
                            reference.fetch(contig, pos + ref_len, pos + ref_len + after)])
    return AlleleWindow(bases, start, pos - start, pos - start + len(allele))


def differing(ref: str, alt: str) -> np.ndarray:
    """Offsets where equal-length alleles differ (the bases an mlm masks)."""
    return np.flatnonzero(np.frombuffer(ref.encode(), np.uint8) != np.frombuffer(alt.encode(), np.uint8))
