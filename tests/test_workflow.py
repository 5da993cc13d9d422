"""The Snakemake workflow (workflows/Snakefile), run by real Snakemake on the real chr20 data.

Two samples: the NA12878 BAM (indexed beside it) and a symlink to it under another name with
no index (so the workflow indexes it), over two shards of chr20:10,000,001-10,010,000 with the
tiny variant model.  Checks: lint, the jobs of a dry run, a real run end to end (merged HDF5,
VCF, BED, evaluation JSON), a no-op rerun, and that deleting one shard reruns only that shard
and what depends on it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

pytest.importorskip("snakemake")

SNAKEFILE = Path(__file__).resolve().parents[1] / "workflows" / "Snakefile"
REGION = ("chr20", 10_000_000, 10_010_000)  # 0-based; shards cut at 10,005,000 (a multiple of 5,000)
SAMPLES = ("NA12878", "NA12878_copy")


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    # the rules call `genoformer`: the one installed beside this Python
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir), *args],
                          capture_output=True, text=True, env=env, timeout=300)


def job_counts(output: str) -> Counter:
    """The "Job stats" table of a (dry) run: rule -> number of jobs."""
    counts: Counter = Counter()
    table = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    for line in table.splitlines()[3:]:
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit() or fields[0] == "total":
            if counts:
                break
            continue
        counts[fields[0]] = int(fields[1])
    return counts


def alleles_inside(vcf: Path, region: tuple[str, int, int], mask: np.ndarray) -> int:
    """Distinct non-reference alleles in the genotypes of records whose REF span lies where `mask` is True."""
    import pysam

    contig, start, end = region
    n = 0
    with pysam.VariantFile(str(vcf)) as fh:
        for rec in fh.fetch(contig, start, end):
            a, b = rec.start - start, rec.stop - start
            if a >= 0 and b <= end - start and mask[a:b].all():
                n += len({g for g in rec.samples[0]["GT"] if g})
    return n


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, chr20, tiny_variant_model) -> Path:
    root = tmp_path_factory.mktemp("workflow")
    (root / "config").mkdir()
    reads = root / "reads"
    reads.mkdir()
    (reads / "NA12878_copy.bam").symlink_to(chr20["bam"])  # no .bai beside it: the workflow indexes it
    contig, start, end = REGION
    (root / "regions.bed").write_text(f"{contig}\t{start}\t{end}\n")
    rows = [f"{name}\t{bam}\t{chr20['vcf']}\t{chr20['bed']}"
            for name, bam in zip(SAMPLES, (chr20["bam"], reads / "NA12878_copy.bam"))]
    (root / "config" / "samples.tsv").write_text("sample\treads\ttruth_vcf\tconfident_bed\n" + "\n".join(rows) + "\n")
    config = {"samples": "config/samples.tsv", "reference": str(chr20["fasta"]), "model": str(tiny_variant_model),
              "regions": "regions.bed", "shard_size": 5_000, "predict": {"threads": 1, "mem_mb": 2000}}
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def test_lint_is_clean(workdir):
    proc = snakemake(workdir, "--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_dry_run_lists_the_jobs(workdir):
    proc = snakemake(workdir, "-n", "--cores", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # 2 samples x 2 shards; only the symlinked BAM needs an index
    assert job_counts(proc.stdout) == {"index_bam": 1, "shard_bed": 2, "predict": 4, "merge": 2, "export": 2,
                                       "scored_bed": 2, "evaluate": 2, "all": 1}
    for shard in ("0001_chr20_10000001", "0002_chr20_10005001"):
        assert f"results/NA12878/shards/{shard}.h5" in proc.stdout


def test_bad_config_is_refused_at_start(workdir, tmp_path):
    bad = yaml.safe_load((workdir / "config" / "config.yaml").read_text()) | {"shard_size": 10}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    proc = snakemake(workdir, "-n", "--cores", "1", "--configfile", str(tmp_path / "bad.yaml"))
    assert proc.returncode != 0
    assert re.search(r"10 is less than the minimum of 1000[\s\S]*shard_size", proc.stdout + proc.stderr)


def test_run_end_to_end_then_noop_then_one_shard(workdir, chr20):
    proc = snakemake(workdir, "--cores", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    contig, start, end = REGION
    merged = {}
    for sample in SAMPLES:
        out = workdir / "results" / sample
        with h5py.File(out / f"{sample}.h5", "r") as fh:
            assert fh.attrs["complete"] and fh.attrs["task"] == "variant"
            assert len(json.loads(fh.attrs["merged_from"])) == 2
            covered = fh[f"contigs/{contig}/covered"][:]
            assert covered[start:end].all() and covered.sum() == end - start  # exactly the regions BED
            merged[sample] = fh[f"contigs/{contig}/variant/probs"][start:end]
        for rule in ("predict", "merge", "export", "evaluate"):  # every rule logs and benchmarks
            assert list((workdir / "logs" / rule).rglob("*.log")), rule
            assert list((workdir / "benchmarks" / rule).rglob("*.tsv")), rule
        import pysam

        with pysam.VariantFile(str(out / f"{sample}.vcf.gz")) as vcf:
            assert list(vcf.header.samples) == [sample]
            assert all(contig == rec.contig and start < rec.pos <= end for rec in vcf)
        assert (out / f"{sample}.bed").is_file()
        # scored: the predicted region within the confident BED (numpy masks, not interval code)
        mask = np.zeros(end - start, bool)
        for line in chr20["bed"].read_text().splitlines():
            a, b = np.clip([int(x) - start for x in line.split("\t")[1:3]], 0, end - start)
            mask[a:b] = True
        scored = np.zeros(end - start, bool)
        for line in (out / "scored.bed").read_text().splitlines():
            _, a, b = line.split("\t")
            scored[int(a) - start:int(b) - start] = True
        np.testing.assert_array_equal(scored, mask)
        # the evaluation scored exactly those bases, and every truth and call allele inside them (pysam counts)
        evaluation = json.loads((out / "evaluation.json").read_text())
        assert evaluation["scored_bases"] == int(mask.sum())
        assert evaluation["all"]["tp"] + evaluation["all"]["fn"] == alleles_inside(chr20["vcf"], REGION, mask)
        assert evaluation["all"]["tp"] + evaluation["all"]["fp"] == alleles_inside(out / f"{sample}.vcf.gz", REGION,
                                                                                   mask)
    # the copy is the same reads under another name: the same predictions
    np.testing.assert_array_equal(merged[SAMPLES[0]], merged[SAMPLES[1]])
    assert (workdir / "results" / "reads" / "NA12878_copy.bam.bai").is_file()

    proc = snakemake(workdir, "-n", "--cores", "2")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout + proc.stderr

    untouched = (workdir / "results" / SAMPLES[0] / f"{SAMPLES[0]}.h5").stat().st_mtime_ns
    (workdir / "results" / SAMPLES[1] / "shards" / "0002_chr20_10005001.h5").unlink()
    proc = snakemake(workdir, "-n", "--cores", "2")
    assert job_counts(proc.stdout) == {"predict": 1, "merge": 1, "export": 1, "evaluate": 1, "all": 1}
    assert re.search(r"results/NA12878_copy/shards/0002_chr20_10005001\.h5", proc.stdout)
    proc = snakemake(workdir, "--cores", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (workdir / "results" / SAMPLES[0] / f"{SAMPLES[0]}.h5").stat().st_mtime_ns == untouched
    with h5py.File(workdir / "results" / SAMPLES[1] / f"{SAMPLES[1]}.h5", "r") as fh:
        np.testing.assert_array_equal(fh[f"contigs/{contig}/variant/probs"][start:end], merged[SAMPLES[0]])


def test_cram_sample_is_indexed_and_predicts_like_the_bam(workdir, chr20):
    """A CRAM of the same reads (no index: the workflow makes the .crai) gives the BAM's predictions."""
    import pysam

    contig, start, end = REGION
    cram = workdir / "reads" / "NA12878_cram.cram"
    with pysam.AlignmentFile(str(chr20["bam"])) as bam, \
            pysam.AlignmentFile(str(cram), "wc", template=bam, reference_filename=str(chr20["fasta"])) as out:
        for read in bam.fetch(contig, start - 5_000, end + 5_000):  # every read the shard's windows see
            out.write(read)
    with open(workdir / "config" / "samples.tsv", "a") as fh:
        fh.write(f"NA12878_cram\t{cram}\n")
    shard = "shards/0001_chr20_10000001.h5"
    proc = snakemake(workdir, "--cores", "2", f"results/NA12878_cram/{shard}", f"results/NA12878/{shard}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (workdir / "results" / "reads" / "NA12878_cram.cram.crai").is_file()
    with h5py.File(workdir / "results" / "NA12878_cram" / shard, "r") as got, \
            h5py.File(workdir / "results" / "NA12878" / shard, "r") as want:
        assert got.attrs["bam"].endswith("NA12878_cram.cram")
        for name in ("covered", "variant/probs", "variant/alt", "variant/depth", "variant/deletion_fraction"):
            np.testing.assert_array_equal(got[f"contigs/{contig}/{name}"][start:end],
                                          want[f"contigs/{contig}/{name}"][start:end])


def test_a_failing_shard_fails_the_run_and_leaves_no_output(workdir, tmp_path, shared_data):
    """Reads aligned to another genome: predict exits non-zero with its one-line error in the log,
    Snakemake fails the run, and no shard file is left at the final name."""
    bad = tmp_path / "work"
    shutil.copytree(workdir / "config", bad / "config")
    shutil.copy(workdir / "regions.bed", bad / "regions.bed")
    other = shared_data / "sarscov2_mt192765" / "illumina" / "bam" / "test_paired_end.sorted.bam"
    (bad / "config" / "samples.tsv").write_text(f"sample\treads\nSARS\t{other}\n")
    shard = "results/SARS/shards/0001_chr20_10000001.h5"
    proc = snakemake(bad, "--cores", "1", shard)
    assert proc.returncode != 0
    assert not (bad / shard).exists()
    log = (bad / "logs" / "predict" / "SARS" / "0001_chr20_10000001.log").read_text()
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in log, log


def test_slurm_profile_dry_run(workdir):
    """The SLURM profile parses and gives each job its resources (no cluster needed for a dry run)."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    profile = SNAKEFILE.parent / "profiles" / "slurm"
    proc = snakemake(workdir, "-n", "--profile", str(profile), "--forcerun", "predict")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    predict = proc.stdout.split("rule predict:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"resources: .*mem_mb=2000.*slurm_account=your_account.*runtime=120", predict), predict


def test_shipped_config_runs_the_simulated_example(tmp_path):
    """workflows/config as shipped, on `genoformer simulate`'s example: valid, and the jobs it plans.

    (A dry run: the model folder only has to exist; training one is the README's quick start.)"""
    from genoformer.simulate.genome import simulate

    shutil.copytree(SNAKEFILE.parent / "config", tmp_path / "config")
    simulate(tmp_path / "example", 0)
    (tmp_path / "example" / "model").mkdir()
    proc = snakemake(tmp_path, "-n", "-p", "--cores", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # chrA (60 kb) and chrB (30 kb) pack into one 10 Mb shard; SIM1's reads are indexed already
    assert job_counts(proc.stdout) == {"shard_bed": 1, "predict": 1, "merge": 1, "export": 1, "scored_bed": 1,
                                       "evaluate": 1, "all": 1}
    assert "results/SIM1/shards/0001_chrA_1.h5" in proc.stdout
    assert re.search(r"genoformer merge \S+0001_chrA_1\.h5 --out results/SIM1/SIM1\.h5 --expect-contigs", proc.stdout)
