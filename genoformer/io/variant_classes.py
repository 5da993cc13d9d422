"""The per-base classes of the variant task, defined once: truth labels, the model's head, the
predictions file (`variant/probs` columns) and export all read this layout.

A base is hom_ref, or a variant type x genotype:
- snv_*: the base is substituted;
- insertion_*: a sequence is inserted right after the base (the VCF anchor, where pileup and
  `Alignments` put an insertion's reads);
- deletion_*: the base itself is deleted (each deleted base carries the class, not the anchor);
and *_het (one haplotype) or *_hom_alt (every haplotype: 1/1, or two alt alleles 1/2).
Where events overlap on a base, the truth labels keep the larger variant type and the larger
genotype (deletion > insertion > snv; hom_alt > het), as io.variants places them.

Files and checkpoints of the first release used three classes (hom_ref, het, hom_alt) with no
variant type; `check_variant_classes` refuses them with one line (exit 3).
"""
from __future__ import annotations

import numpy as np

from genoformer.errors import InputError

VARIANT_CLASSES = ("hom_ref", "snv_het", "snv_hom_alt", "insertion_het", "insertion_hom_alt",
                   "deletion_het", "deletion_hom_alt")
HOM_REF = VARIANT_CLASSES.index("hom_ref")
OLD_CLASSES = ("hom_ref", "het", "hom_alt")  # the first release's genotype-only layout
# per class: its variant type (io.variants.VARIANT_TYPES index) and genotype (io.variants.GENOTYPES index)
CLASS_TYPE = np.array([0, 1, 1, 2, 2, 3, 3])
CLASS_GENOTYPE = np.array([0, 1, 2, 1, 2, 1, 2])
HET_CLASSES = np.flatnonzero(CLASS_GENOTYPE == 1)
HOM_CLASSES = np.flatnonzero(CLASS_GENOTYPE == 2)


def variant_class(genotype: np.ndarray, variant_type: np.ndarray, ignore: int = -100) -> np.ndarray:
    """The VARIANT_CLASSES index of each base from its genotype and variant type labels; `ignore` stays."""
    genotype, variant_type = np.asarray(genotype), np.asarray(variant_type)
    called = (genotype > 0) & (variant_type > 0)
    out = np.where(called, 2 * variant_type + genotype - 2, 0)
    return np.where((genotype == ignore) | (variant_type == ignore), ignore, out).astype(np.int64)


def type_probabilities(probs: np.ndarray) -> np.ndarray:
    """[n, 4] P(none), P(snv), P(insertion), P(deletion) from class probabilities [n, 7]."""
    out = np.zeros((len(probs), 4), dtype=np.float64)
    np.add.at(out.T, CLASS_TYPE, np.asarray(probs, dtype=np.float64).T)
    return out


def check_variant_classes(classes, source: str) -> None:
    """InputError when `classes` (of a checkpoint or predictions file) is not VARIANT_CLASSES."""
    classes = [str(c) for c in classes]
    if classes == list(VARIANT_CLASSES):
        return
    if classes == list(OLD_CLASSES):
        raise InputError(f"{source}: variant classes hom_ref, het, hom_alt are the first release's genotype-only "
                         f"layout; this genoformer calls {len(VARIANT_CLASSES)} classes (variant type x genotype)",
                         hint="train the variant model again, then predict and export with it")
    raise InputError(f"{source}: variant classes {', '.join(classes) or 'none'} are not "
                     f"{', '.join(VARIANT_CLASSES)}")


def forward_strand(mirrored: np.ndarray) -> np.ndarray:
    """Class probabilities [n, 7] predicted on the reverse strand and reversed onto the forward bases, with
    each insertion moved to its forward anchor: an insertion after reverse-strand base i lies before
    forward base j = n-1-i, so after base j-1 (the first base's is lost, as on the strand itself).
    The mass moved in or out of a base's insertion classes is taken from or given to its hom_ref."""
    out = np.array(mirrored, dtype=np.float32, copy=True)
    inserted = CLASS_TYPE == 2
    out[:-1, inserted] = mirrored[1:, inserted]
    out[-1, inserted] = 0
    out[:, 0] = np.clip(1 - out[:, 1:].sum(1), 0, None)
    return out / out.sum(1, keepdims=True)
