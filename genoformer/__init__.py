"""genoformer: long-range deep learning on genomes."""

__version__ = "0.1.0"

__all__ = ["__version__", "read_predictions", "open_predictions"]


def __getattr__(name: str):
    # imported on first use, so `import genoformer` (and `genoformer --help`) stays light: no h5py, no torch
    if name in ("read_predictions", "open_predictions"):
        from genoformer.io import predictions

        return getattr(predictions, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
