"""Write a BED of intervals given as rule params (run by Snakemake's `script:`).

Used for each shard's regions (predict --regions-bed) and for a sample's scoring regions (the
predicted regions, intersected with the sample's confident BED when it has one).  Intervals
travel as params, not on a command line: a shard of thousands of small contigs would not fit
in one shell command.

`snakemake` (input, output, params, log) is the object Snakemake's `script:` directive defines.
"""
import sys

from genoformer.coords import Interval, IntervalSet, read_bed

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    wanted = IntervalSet(Interval(*iv) for iv in snakemake.params.intervals)
    confident = snakemake.input.get("confident")
    if confident:
        wanted = wanted.intersection(IntervalSet(read_bed(confident, snakemake.params.lengths)))
    intervals = wanted.merged()
    with open(snakemake.output[0], "w") as out:
        out.writelines(iv.to_bed() + "\n" for iv in intervals)
    print(f"{snakemake.output[0]}: {len(intervals)} intervals, {sum(map(len, intervals)):,} bases", file=log)
