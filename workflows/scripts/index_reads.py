"""Link a sample's BAM/CRAM under results/reads/ and index the link there (run by Snakemake's `script:`).

The user's folder may be read-only or shared, so the index is never written beside the
original.  pysam's bundled samtools does the indexing: no samtools install is needed.

`snakemake` (input, output, params, log) is the object Snakemake's `script:` directive defines.
"""
import os
import sys

import pysam

with open(snakemake.log[0], "w") as log:
    sys.stderr = sys.stdout = log
    link = snakemake.output.reads
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(os.path.abspath(snakemake.input.reads), link)
    pysam.index(link, snakemake.output.index)
    print(f"indexed {snakemake.input.reads} as {link} -> {snakemake.output.index}")
