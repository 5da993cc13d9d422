"""A GenoModel run by hand on plain strings: its inputs laid out here, as WindowDataset lays out a window
(tokens, then per base the letter's index in the alphabet, the lower-case bit, the real bases), so the
tests check apply/ against the model without going through apply.model."""
from __future__ import annotations

import numpy as np
import torch


def model_inputs(model, seqs: list[str], n_bases: int) -> dict:
    """GenoModel.forward's keyword arguments for sequences of at most n_bases letters, padded after."""
    tok = model.tokenizer
    letters = tok.alphabet.decode()
    tokens = torch.full((len(seqs), tok.n_tokens(n_bases)), tok.pad_id)
    bases = torch.full((len(seqs), n_bases), tok.pad_code)
    soft_mask = torch.zeros(len(seqs), n_bases, dtype=torch.bool)
    valid = torch.zeros(len(seqs), n_bases, dtype=torch.bool)
    for b, seq in enumerate(seqs):
        ids = torch.from_numpy(tok.encode(seq))
        tokens[b, :len(ids)] = ids
        upper = seq.upper().replace("U", "T") if tok.kind == "dna" else seq.upper()
        bases[b, :len(seq)] = torch.tensor([letters.index(c) if c in letters[:tok.pad_code] else tok.pad_code
                                            for c in upper])
        soft_mask[b, :len(seq)] = torch.tensor([c.islower() for c in seq])
        valid[b, :len(seq)] = True
    return {"tokens": tokens, "token_mask": tokens != tok.pad_id, "n_bases": n_bases, "bases": bases,
            "soft_mask": soft_mask, "valid": valid}


def run_model(model, seqs: list[str], n_bases: int) -> np.ndarray:
    """float64 probabilities: softmax, or sigmoid for pattern models ([B, n_bases, C] or [B, C])."""
    with torch.no_grad():
        out = model(**model_inputs(model, seqs, n_bases))
    return (out.sigmoid() if model.task == "pattern" else out.softmax(-1)).double().numpy()
