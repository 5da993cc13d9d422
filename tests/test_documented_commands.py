"""The quick start of workflows/README.md, run as written there (read from the README itself), scaled down
only through its commands' own options, on simulated data: the model it trains calls SNVs through the
whole Snakemake workflow. The README quick start (pipelines/quickstart.sh) is tests/test_quickstart.py."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pysam
import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
# CI size, through the commands' own options (the last of a repeated option wins)
SCALE = {"simulate": ["--contig", "chrA:30000", "--contig", "chrB:12000"],
         "train": ["--max-steps", "30", "--no-progress"]}


def quick_start_commands(readme: Path) -> list[list[str]]:
    """The commands of the first ```bash block after '## Quick start', continuation lines joined."""
    text = readme.read_text().split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = []
    for line in re.sub(r"\\\n\s*", " ", block).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            commands.append(shlex.split(line))
    return commands


def test_the_workflow_quick_start_calls_snvs(tmp_path):
    pytest.importorskip("snakemake")
    commands = quick_start_commands(WORKFLOWS / "README.md")
    assert [c[:2] for c in commands] == [["genoformer", "simulate"], ["genoformer", "train"], ["snakemake", "--cores"]]
    shutil.copytree(WORKFLOWS / "config", tmp_path / "config")  # "From this folder": config/ beside the run
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1")
    for command in commands:
        if command[0] == "genoformer":
            args = [sys.executable, "-m", "genoformer", *command[1:], *SCALE.get(command[1], [])]
        else:
            args = [sys.executable, "-m", "snakemake", "-s", str(WORKFLOWS / "Snakefile"), "--cores", "2"]
        proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-3000:])
    scores = json.loads((tmp_path / "results" / "SIM1" / "evaluation.json").read_text())["snv"]
    with pysam.VariantFile(str(tmp_path / "example" / "truth.vcf.gz")) as truth:
        snvs = sum(1 for rec in truth if all(len(a) == 1 for a in rec.alleles))
    assert scores["tp"] + scores["fn"] == snvs > 20  # every planted SNV is scored (the confident BED ends aside)
    assert scores["precision"] >= 0.8 and scores["recall"] >= 0.5, scores
