#!/usr/bin/env bash
# The MileBench path offline, on CPU, in a few minutes: a synthetic MileBench-format set of coloured shapes (2-8
# images per sample: multiple choice, open-ended, needle; SequentialPrune/frontends/milebench/synthetic.py), the
# tiny LLaVA checkpoint (checkpoints/tiny-shapes-llava), generate.py for none, fastv and sequential at R in
# {0.5, 0.75}, K = 2, then score.py's tables and the timing log.
# The checkpoint was trained on one-image questions only, so its accuracy here means nothing: the demo shows the
# pipeline (prompts with several images, pruning counts per layer in seqprune_stats/, scoring, tables, times).
# Overrides: N (samples per set) [12], CKPT, WORK_DIR [<repo>/outputs/demo_tiny_milebench], RATIOS, LAYERS,
# METHODS, CACHE_MODE [static], PYTHON. Results are regenerated on every run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="${WORK_DIR:-$repo/outputs/demo_tiny_milebench}"
if [ -n "${PYTHON:-}" ]; then python="$PYTHON"
elif [ -x "${VENV:-$repo/.venv}/bin/python" ]; then python="${VENV:-$repo/.venv}/bin/python"
else python=python3; fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
rm -rf "$work"
mapfile -t names < <("$python" -m SequentialPrune.frontends.milebench.synthetic --root "$work/data" --n "${N:-12}" | cut -f1)
echo "=== checkpoint ${CKPT:-$repo/checkpoints/tiny-shapes-llava}; datasets ${names[*]}"
export DATA_DIR="$work/data" DATA="${names[*]}" OUTPUT_DIR="$work/runs" PYTHON="$python"
export MODEL=llava_seqprune MODEL_PATH="${CKPT:-$repo/checkpoints/tiny-shapes-llava}"
export METHODS="${METHODS:-fastv sequential}" RATIOS="${RATIOS:-0.5 0.75}" LAYERS="${LAYERS:-2}"
export CACHE_MODE="${CACHE_MODE:-static}" SCORE_DTYPE="${SCORE_DTYPE:-float32}" EXTRA_ARGS="--max-new-tokens 4"
source "$here/_grid.sh"
milebench_grid
echo "=== per-sample image tokens per layer: $OUTPUT_DIR/<setting>/seqprune_stats/"
