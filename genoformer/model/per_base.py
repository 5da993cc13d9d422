"""PerBaseConfig: the per-base parts of a GenoModel (convolutional stem, per-base decoder, the k-mer
composition of a per-sequence head), saved in checkpoints.

A checkpoint without this section is a model from before them: no stem, the k x classes
projection per token (`LEGACY`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import UsageError, refuse_unknown
from ..io.evidence import EVIDENCE_SCALINGS


MAX_COMPOSITION_K = 8  # 4^8 = 65,536 k-mers, each with a weight per class


@dataclass(frozen=True)
class PerBaseConfig:
    stem: bool = True  # 1-D convolutions over per-base inputs, pooled onto the tokens and added to their embedding
    stem_width: int = 64  # channels of the stem (and of its per-base features the decoder reads)
    decoder: bool = True  # token states laid back onto bases + convolutions (off: k x classes projection per token)
    decoder_width: int = 64
    decoder_depth: int = 2  # residual convolution blocks of the decoder
    dropout: float = 0.0  # in the stem's and decoder's blocks
    evidence_scaling: str = "weighed"  # how the stem scales read evidence (io.evidence.EVIDENCE_SCALINGS)
    soft_mask_input: bool = True  # the stem reads the soft-mask bit; off where soft-masking is the label
    composition_k: int = 0  # DNA per-sequence heads: add a linear function of the k-mer frequencies (0: off)

    def __post_init__(self) -> None:
        for name in ("stem", "decoder", "soft_mask_input"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("stem_width", "decoder_width", "decoder_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if isinstance(self.composition_k, bool) or not isinstance(self.composition_k, int) \
                or not 0 <= self.composition_k <= MAX_COMPOSITION_K:
            raise UsageError(f"composition-k must be an integer from 0 (off) to {MAX_COMPOSITION_K}, "
                             f"got {self.composition_k!r}")
        if self.evidence_scaling not in EVIDENCE_SCALINGS:
            raise UsageError(f"evidence-scaling must be one of {', '.join(EVIDENCE_SCALINGS)}, "
                             f"got {self.evidence_scaling!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise UsageError(f"dropout must be a number in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PerBaseConfig:
        """The section as a checkpoint saved it (one saved before evidence_scaling existed scaled by "share")."""
        if not isinstance(values, dict):
            raise UsageError(f"per-base config must be a JSON object, got {type(values).__name__}")
        refuse_unknown(values, {f.name for f in dataclasses.fields(cls)}, "per-base config key")
        return cls(**({"evidence_scaling": "share"} | values))


LEGACY = PerBaseConfig(stem=False, decoder=False)
