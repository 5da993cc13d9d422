#!/usr/bin/env bash
# The shipped starter model on an example it never saw: simulate -> predict -> export -> evaluate, no training.
#
#   bash pipelines/starter.sh OUT_DIR
#
# Simulates the default example (seed 0: chrA 60 kb and chrB 30 kb, 30x reads; the starter model was
# trained on seed 7's genome, pipelines/starter-variant.sh), predicts both contigs with
# `--model starter-variant`, exports VCF calls and scores them against the truth inside the confident
# regions. Well under a minute on an idle 2-core CPU (benchmarks/quickstart_bench.py --script starter).
# OUT_DIR must not exist or be empty.
#   STARTER_PROGRESS [1; 0 hides the progress bars]
#   GENOFORMER [genoformer]: the command to run (e.g. "python -m genoformer")
set -euo pipefail

if [[ $# -ne 1 || $1 == -* ]]; then
    echo "usage: bash pipelines/starter.sh OUT_DIR" >&2
    exit 2
fi
out=$1
if [[ -e $out && -n $(ls -A "$out" 2>/dev/null) ]]; then
    echo "starter: $out is not empty; give a new folder (nothing is overwritten)" >&2
    exit 4
fi
read -r -a gf <<< "${GENOFORMER:-genoformer}"
progress=--progress
[[ ${STARTER_PROGRESS:-1} == 0 ]] && progress=--no-progress
mkdir -p "$out"
ex=$out/example
step() { echo "== $*" >&2; }

step "1/4 simulate: reference, reads, truth -> $ex"
"${gf[@]}" simulate --out "$ex" --seed 0 >/dev/null

step "2/4 predict: per-base variant-class probabilities with the starter model -> $out/predictions.h5"
"${gf[@]}" predict --model starter-variant --reference "$ex/reference.fa" --bam "$ex/reads.bam" \
    --out "$out/predictions.h5" $progress >"$out/predict-summary.json"

step "3/4 export: VCF calls -> $out/calls.vcf.gz"
"${gf[@]}" export "$out/predictions.h5" --vcf "$out/calls.vcf.gz" $progress >"$out/export-summary.json"

step "4/4 evaluate: calls against the truth inside the confident regions"
"${gf[@]}" evaluate --calls "$out/calls.vcf.gz" --truth-vcf "$ex/truth.vcf.gz" \
    --confident-bed "$ex/confident.bed" --reference "$ex/reference.fa" --json "$out/evaluation.json" \
    | tee "$out/evaluation.txt"

python3 - "$out" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
scores = json.loads((out / "evaluation.json").read_text())


def f(value):
    return "-" if value is None else f"{value:.3f}"


print(f"""
Starter done. Outputs in {out}/:
  example/            simulated reference.fa, reads.bam, truth.vcf.gz, confident.bed (never seen by the model)
  predictions.h5      per-base variant-class probabilities (docs/hdf5.md; genoformer.read_predictions)
  calls.vcf.gz        VCF calls exported from them (bgzipped + .tbi; bcftools view reads it)
  evaluation.json     scores of the calls against truth.vcf.gz inside confident.bed
  SNV   precision {f(scores['snv']['precision'])}  recall {f(scores['snv']['recall'])}  F1 {f(scores['snv']['f1'])}
  indel precision {f(scores['indel']['precision'])}  recall {f(scores['indel']['recall'])}  F1 {f(scores['indel']['f1'])}
The starter model (genoformer/pretrained/starter-variant/MODEL_CARD.md) was trained on simulated reads only:
on real reads train your own (pipelines/quickstart.sh shows how; pipelines/variant-cpu.yaml for real data).""")
EOF
