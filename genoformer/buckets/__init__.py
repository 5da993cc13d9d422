"""`genoformer buckets`: which bases each LSH layer hashes together over a region.

map (BucketMap, at the bottom) <- run (the driver), stats, plots, files (HDF5, BED, TSV).
"""
