"""Write a BED of intervals given as rule params (run by Snakemake's `script:`).

Used for each shard's regions (predict --regions-bed) and for a sample's scoring regions (the
predicted regions, intersected with the sample's confident BED when it has one).  Intervals
travel as params, not on a command line: a shard of thousands of small contigs would not fit
in one shell command.

`snakemake` (input, output, params, log) is the object Snakemake's `script:` directive defines.
"""
import sys

from genoformer.coords import Interval, merge_intervals, read_bed

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    intervals = merge_intervals(Interval(*iv) for iv in snakemake.params.intervals)
    confident = snakemake.input.get("confident")
    if confident:
        # both lists are merged (sorted, disjoint), so one sweep intersects them
        other = merge_intervals(read_bed(confident, snakemake.params.lengths))
        both, j = [], 0
        for iv in intervals:
            while j < len(other) and (other[j].contig, other[j].end) <= (iv.contig, iv.start):
                j += 1
            k = j
            while k < len(other) and (other[k].contig, other[k].start) < (iv.contig, iv.end):
                if other[k].contig == iv.contig and max(iv.start, other[k].start) < min(iv.end, other[k].end):
                    both.append(Interval(iv.contig, max(iv.start, other[k].start), min(iv.end, other[k].end)))
                k += 1
        intervals = both
    with open(snakemake.output[0], "w") as out:
        out.writelines(iv.to_bed() + "\n" for iv in intervals)
    print(f"{snakemake.output[0]}: {len(intervals)} intervals, {sum(map(len, intervals)):,} bases", file=log)
