#!/usr/bin/env bash
# The recipe of the shipped starter model (`--model starter-variant`, genoformer/pretrained/starter-variant/).
#
#   bash pipelines/starter-variant.sh OUT_DIR [INSTALL_DIR]
#
# Simulates its own genome (seed 7: not the quickstart's seed 0, so the quickstart's example is data
# the starter never saw; chrA 1 Mb to train on, chrB 100 kb to validate on, 30x reads, a variant every
# 500 bases), trains the quickstart's model shape (one token per base, d_model 64, depth 2, local then
# LSH attention, window 1,536, balanced class weights) for 400 steps, and with INSTALL_DIR copies the
# last checkpoint there as a run folder that `--model` reads (weights and metadata, no optimizer state).
# About 10 CPU-minutes. OUT_DIR must not exist or be empty.
#   GENOFORMER [genoformer]: the command to run (e.g. "python -m genoformer")
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || $1 == -* ]]; then
    echo "usage: bash pipelines/starter-variant.sh OUT_DIR [INSTALL_DIR]" >&2
    exit 2
fi
out=$1
install=${2:-}
if [[ -e $out && -n $(ls -A "$out" 2>/dev/null) ]]; then
    echo "starter-variant: $out is not empty; give a new folder (nothing is overwritten)" >&2
    exit 4
fi
read -r -a gf <<< "${GENOFORMER:-genoformer}"
window=1536
mkdir -p "$out"

echo "== 1/2 simulate -> $out/example" >&2
"${gf[@]}" simulate --out "$out/example" --seed 7 --coverage 30 --variant-rate 0.002 \
    --contig chrA:1000000 --contig chrB:100000 >/dev/null

echo "== 2/2 train -> $out/variant-run" >&2
"${gf[@]}" train --task variant --reference "$out/example/reference.fa" --bam "$out/example/reads.bam" \
    --truth-vcf "$out/example/truth.vcf.gz" --confident-bed "$out/example/confident.bed" \
    --train-regions chrA --val-regions chrB --val-windows 66 \
    --window "$window" --k 1 --d-model 64 --depth 2 --heads 4 --bucket-size 32 --n-hashes 2 \
    --attention local,lsh --class-weights balanced --max-steps 400 --batch-size 8 --lr 1e-3 \
    --val-every 100 --seed 7 --no-progress --out "$out/variant-run" >"$out/train-summary.json"

if [[ -n $install ]]; then
    step=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["checkpoint"])' \
        "$out/variant-run/checkpoints/latest.json")
    mkdir -p "$install/checkpoints/$step"
    cp "$out/variant-run/checkpoints/$step/model.safetensors" "$out/variant-run/checkpoints/$step/checkpoint.json" \
        "$install/checkpoints/$step/"
    cp "$out/variant-run/checkpoints/latest.json" "$install/checkpoints/"
    cp "$out/variant-run/config.json" "$install/"
    echo "installed $step -> $install" >&2
fi
