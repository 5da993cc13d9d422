"""Evaluation against truth: variant calls against a truth VCF (variants), per-base class predictions
against BED/GFF tracks (patterns)."""
