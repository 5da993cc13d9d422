"""genoformer: long-range deep learning on genomes."""

__version__ = "0.1.0"
