#!/usr/bin/env bash
# Issue 17's GPU checks, prepared for a session that is lent an H100/H200 (none was lent when
# this was written, 2026-12-02). Run from the repository root with the venv active; OUT is
# where the raw outputs go (copy them to reports/benchmarks/<gpu>-<date>/ afterwards).
set -euo pipefail
OUT=${OUT:-/tmp/issue17}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
# 1. single-query head ablation at GPT-2-XL shape: joint vs prefix vs all-positions
timeout 900 rarebench bench --heads --model gpt2-xl-shape --device cuda --last-layers 2 \
    --rows 16 --seq-len 256 --json > "$OUT/heads-gpt2xl.log" 2>&1 || echo "heads: rc $?"
# 2. neuron influence rate at GPT-2-XL shape, fp32 vs bf16 weights (the clean-pass cost)
timeout 600 rarebench bench --model gpt2-xl-shape --device cuda --positions 4096 --json \
    > "$OUT/neuron-gpt2xl-fp32.log" 2>&1 || echo "neuron fp32: rc $?"
# 3. the whole suite at GPT-2-XL shape, ~100k evaluated positions, claim 3 on 64 rows x every
#    head of all 48 layers, both scopes, three modes; clean forward precision chosen by
#    measurement (auto: bf16 or tf32 if within 1e-4 nats of fp32). Stages stream to
#    $OUT/suite/suite.partial.jsonl, so a run cut by the time limit still reports.
timeout 3000 rarebench bench --suite --shape gpt2-xl --rows 400 --seq-len 256 \
    --routing-rows 64 --device cuda --clean-precision auto --out "$OUT/suite" --json \
    > "$OUT/suite.log" 2>&1 || echo "suite: rc $?"
