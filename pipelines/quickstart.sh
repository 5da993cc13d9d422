#!/usr/bin/env bash
# Quickstart: simulate -> train -> predict -> export -> evaluate on a small simulated example.
#
#   bash pipelines/quickstart.sh OUT_DIR
#
# Simulates a genome (chrA 500 kb, chrB 30 kb) with a sample's SNVs and small indels and 30x Illumina-like
# reads, trains a small `variant` model on chrA (validated on chrB), predicts chrB, exports VCF calls
# and scores them against the truth inside the confident regions. About a minute and a half on an idle
# 2-core CPU (benchmarks/quickstart_bench.py measures it).
# OUT_DIR must not exist or be empty. Settings are environment variables (defaults in brackets):
#   QUICKSTART_STEPS [60]  QUICKSTART_BATCH [8]  QUICKSTART_LR [1e-2]  QUICKSTART_D_MODEL [64]
#   QUICKSTART_DEPTH [2]  QUICKSTART_WINDOW [1536]  QUICKSTART_K [1]  QUICKSTART_CLASS_WEIGHTS [balanced]
#   QUICKSTART_SEED [0]  QUICKSTART_CONTIGS ["chrA:500000 chrB:30000"; the last is held out]
#   QUICKSTART_COVERAGE [30]  QUICKSTART_PROGRESS [1; 0 hides the progress bars]
#   GENOFORMER [genoformer]: the command to run (e.g. "python -m genoformer")
set -euo pipefail

if [[ $# -ne 1 || $1 == -* ]]; then
    echo "usage: bash pipelines/quickstart.sh OUT_DIR" >&2
    exit 2
fi
out=$1
if [[ -e $out && -n $(ls -A "$out" 2>/dev/null) ]]; then
    echo "quickstart: $out is not empty; give a new folder (nothing is overwritten)" >&2
    exit 4
fi

# 60 steps at a high learning rate: the scores of 300 steps at 3e-3 (SNV F1 1.000, indel F1 0.800) at a
# fifth of the cost (benchmarks/results/quickstart.json; seeds 1 and 2 score SNV F1 1.000 and 0.970)
steps=${QUICKSTART_STEPS:-60}
batch=${QUICKSTART_BATCH:-8}
lr=${QUICKSTART_LR:-1e-2}
d_model=${QUICKSTART_D_MODEL:-64}
depth=${QUICKSTART_DEPTH:-2}
window=${QUICKSTART_WINDOW:-1536}
# one token per base: the reference base and its reads' evidence meet in one position, so a small model
# learns genotypes in a few hundred steps (with 6-mers it must also learn which of a token's 6 bases varies)
k=${QUICKSTART_K:-1}
# non-ref bases are ~1/1000: without weights the model predicts hom_ref everywhere (balanced: the
# variant task's default, the inverse frequency of each genotype over the training bases)
class_weights=${QUICKSTART_CLASS_WEIGHTS:-balanced}
seed=${QUICKSTART_SEED:-0}
coverage=${QUICKSTART_COVERAGE:-30}
# a long training contig: ~480 variants to learn from instead of ~50, at the same cost per step
read -r -a contigs <<< "${QUICKSTART_CONTIGS:-chrA:500000 chrB:30000}"
read -r -a gf <<< "${GENOFORMER:-genoformer}"
progress=--progress
[[ ${QUICKSTART_PROGRESS:-1} == 0 ]] && progress=--no-progress

if (( ${#contigs[@]} < 2 )); then
    echo "quickstart: QUICKSTART_CONTIGS needs two or more NAME:LENGTH (the last one is held out)" >&2
    exit 2
fi
contig_args=()
for c in "${contigs[@]}"; do contig_args+=(--contig "$c"); done
train_contigs=("${contigs[@]:0:${#contigs[@]}-1}")
last=${contigs[${#contigs[@]}-1]}  # not ${contigs[-1]}: macOS ships bash 3.2
held_out=${last%:*}
held_out_length=${last##*:}
train_args=()
for c in "${train_contigs[@]}"; do train_args+=(--train-regions "${c%:*}"); done
# validate on every window of the held-out contig, not the default first 8
val_windows=$(( (${held_out_length//,/} + window - 1) / window ))

mkdir -p "$out"
ex=$out/example
step() { echo "== $*" >&2; }

step "1/5 simulate: reference, reads, truth -> $ex"
"${gf[@]}" simulate --out "$ex" --seed "$seed" --coverage "$coverage" "${contig_args[@]}" >/dev/null

step "2/5 train: variant model on ${train_contigs[*]%:*}, validated on $held_out ($steps steps) -> $out/variant-run"
"${gf[@]}" train --task variant --reference "$ex/reference.fa" --bam "$ex/reads.bam" \
    --truth-vcf "$ex/truth.vcf.gz" --confident-bed "$ex/confident.bed" \
    "${train_args[@]}" --val-regions "$held_out" --val-windows "$val_windows" \
    --window "$window" --k "$k" --d-model "$d_model" --depth "$depth" --heads 4 --bucket-size 32 --n-hashes 2 \
    --attention local,lsh --class-weights "$class_weights" --max-steps "$steps" --batch-size "$batch" \
    --lr "$lr" --val-every "$(( steps < 30 ? steps : 30 ))" --seed "$seed" $progress \
    --out "$out/variant-run" >"$out/train-summary.json"

step "3/5 predict: per-base genotype probabilities on $held_out -> $out/predictions.h5"
"${gf[@]}" predict --model "$out/variant-run" --reference "$ex/reference.fa" --bam "$ex/reads.bam" \
    --region "$held_out" --out "$out/predictions.h5" $progress >"$out/predict-summary.json"

step "4/5 export: VCF calls -> $out/calls.vcf.gz"
"${gf[@]}" export "$out/predictions.h5" --vcf "$out/calls.vcf.gz" $progress >"$out/export-summary.json"

step "5/5 evaluate: calls against the truth inside the confident regions of $held_out"
"${gf[@]}" evaluate --calls "$out/calls.vcf.gz" --truth-vcf "$ex/truth.vcf.gz" \
    --confident-bed "$ex/confident.bed" --region "$held_out" --json "$out/evaluation.json" \
    | tee "$out/evaluation.txt"

python3 - "$out" "$held_out" <<'EOF'
import json, sys
from pathlib import Path

out, held_out = Path(sys.argv[1]), sys.argv[2]
best = json.loads((out / "train-summary.json").read_text())["best"]
scores = json.loads((out / "evaluation.json").read_text())


def f(value):
    return "-" if value is None else f"{value:.3f}"


print(f"""
Quickstart done. Outputs in {out}/:
  example/            simulated reference.fa, reads.bam, truth.vcf.gz, confident.bed (see example/README.txt)
  variant-run/        trained model: checkpoints/, metrics.csv (loss and validation per step), summary.json
  predictions.h5      per-base genotype probabilities on {held_out} (docs/hdf5.md; genoformer.read_predictions)
  calls.vcf.gz        VCF calls exported from them (bgzipped + .tbi; bcftools view reads it)
  evaluation.json     scores of the calls against truth.vcf.gz inside confident.bed ({held_out} only)
What the scores mean ({held_out} was never trained on):
  validation F1 {f(best['metric'])} (step {best['step']}): per-base genotype calls on {held_out} during training
  SNV   precision {f(scores['snv']['precision'])}  recall {f(scores['snv']['recall'])}  F1 {f(scores['snv']['f1'])}
  indel precision {f(scores['indel']['precision'])}  recall {f(scores['indel']['recall'])}  F1 {f(scores['indel']['f1'])}
  Precision: share of the calls that are true variants; recall: share of the true variants called;
  F1 = 2PR/(P+R), 1 is perfect. Insertions are not exported (docs/export_evaluate.md), so indel
  recall stays low; more steps (QUICKSTART_STEPS) raise the scores.""")
EOF
