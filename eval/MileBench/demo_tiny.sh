#!/usr/bin/env bash
# The MileBench path offline, on CPU, in about a minute: a synthetic MileBench-format set of coloured shapes (2-8
# images per sample: multiple choice, open-ended, needle; SequentialPrune/frontends/milebench/synthetic.py), the
# tiny LLaVA trained on those sets' multi-image questions (checkpoints/tiny-shapes-llava-multi, by
# scripts/tiny/train_multi.py on the prompts this front end builds), generate.py for none, fastv and sequential at
# R in {0.5, 0.75}, K = 2, then score.py's tables and the timing log. Unpruned it answers the open-ended set
# (0.75) but the MCQ and needle sets only at chance (its model card says why), so only the open-ended column
# shows what pruning costs it (eval/MileBench/README.md has the measured table).
# --n-tokens-per-image 64: the prompt budget counts the tiny model's 64 tokens per image (not LLaVA-1.5's 576,
# which would cut the first image of an 8-image sample), as in its training.
# Overrides: N (samples per set) [12], CKPT, WORK_DIR [<repo>/outputs/demo_tiny_milebench], RATIOS, LAYERS,
# METHODS, CACHE_MODE [static], PYTHON. Results are regenerated on every run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="${WORK_DIR:-$repo/outputs/demo_tiny_milebench}"
source "$here/_grid.sh"
python="$(seqprune_python)"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
rm -rf "$work/data" "$work/runs"  # not $work itself: it may be the caller's working directory
mapfile -t names < <("$python" -m SequentialPrune.frontends.milebench.synthetic --root "$work/data" --n "${N:-12}" | cut -f1)
echo "=== checkpoint ${CKPT:-$repo/checkpoints/tiny-shapes-llava-multi}; datasets ${names[*]}"
export DATA_DIR="$work/data" DATA="${names[*]}" OUTPUT_DIR="$work/runs" PYTHON="$python"
export MODEL=llava_seqprune MODEL_PATH="${CKPT:-$repo/checkpoints/tiny-shapes-llava-multi}"
export METHODS="${METHODS:-fastv sequential}" RATIOS="${RATIOS:-0.5 0.75}" LAYERS="${LAYERS:-2}"
export CACHE_MODE="${CACHE_MODE:-static}" SCORE_DTYPE="${SCORE_DTYPE:-float32}" EXTRA_ARGS="--max-new-tokens 4 --n-tokens-per-image 64"
milebench_grid
echo "=== per-sample image tokens per layer: $OUTPUT_DIR/<setting>/seqprune_stats/"
