"""Prediction: a trained model over contigs or regions -> per-base HDF5, and what follows from it.

grid (where windows lie on a contig) -> runner (windows through the model) -> writer (crash-safe
HDF5); shards (cut a genome into jobs) and merge (gather a sample's shards); export (VCF, BED,
bedGraph from a predictions file).
"""
