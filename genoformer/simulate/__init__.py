"""The seeded example genome: reference, planted motifs and repeats, a sample's variants (genome) and
its Illumina-like paired reads (reads)."""
