#!/usr/bin/env bash
# The embedded default: the whole evaluation path, offline, on CPU, in a few minutes.
#   1. a tiny llava-hf checkpoint: the trained checkpoints/tiny-shapes-llava, or (TINY_RANDOM=1, or when
#      it is absent) a random-weight one built here with scripts/tiny/checkpoints.py
#   2. a synthetic LMUData benchmark of coloured shapes (scripts/tiny/lmudata.py), from scene seeds
#      disjoint from the checkpoint's training seeds
#   3. eval/VLMEvalKit/run.py for none, fastv, sequential and random at R in {0.5, 0.75, 0.9}, K = 2
#   4. the paper-style table (scripts/collect_results.py) with efficiency columns
# It runs the paper protocol (run.py's default for llava_seqprune): on this checkpoint's word-level tokenizer and
# square 112 px images it gives the same token ids and pixels as the chat template it was trained on
# (tests/eval/test_paper_inputs.py). The runs are static and float32-scored (the fast variant; on a float32 CPU model the
# model's precision is float32): CACHE_MODE=recompute SCORE_DTYPE=model runs the paper demos' procedure.
# Overrides: N (rows per dataset) [40], CKPT, TINY_RANDOM, WORK_DIR [<repo>/outputs/demo_tiny], RATIOS,
# LAYERS, METHODS, CACHE_MODE, SCORE_DTYPE, PYTHON, NPROC (see _grid.sh). Results are regenerated on every run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="${WORK_DIR:-$repo/outputs/demo_tiny}"
n="${N:-40}"
source "$here/_grid.sh"
python="$(seqprune_python)"
export PYTHON="$python" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
ckpt="${CKPT:-$repo/checkpoints/tiny-shapes-llava}"
bench=(--prefix SeqPruneShapes --shapes)
if [ "${TINY_RANDOM:-0}" = 1 ] || [ ! -f "$ckpt/config.json" ]; then
    ckpt="$work/tiny-llava-random"
    echo "=== random-weight tiny checkpoint in $ckpt (its accuracy column is meaningless)"
    "$python" "$repo/scripts/tiny/checkpoints.py" --family llava --out "$ckpt" --layers 12 > /dev/null
    bench=(--prefix SeqPruneTiny)
fi
export LMUData="$work/LMUData"
rm -rf "$LMUData" "$work/runs"
mapfile -t names < <("$python" "$repo/scripts/tiny/lmudata.py" --root "$LMUData" --n "$n" "${bench[@]}" | cut -f1)
extra=(--max-new-tokens 4)
for name in "${names[@]}"; do
    case "$name" in
        *_MCQ) extra+=(--register-dataset "$name=mcq") ;;
        *_YN) extra+=(--register-dataset "$name=yn") ;;
        *_GQA) extra+=(--register-dataset "$name=vqa") ;;
    esac
done
echo "=== checkpoint $ckpt; datasets ${names[*]} ($n rows each)"
export MODEL=llava_seqprune MODEL_PATH="$ckpt" WORK_DIR="$work/runs" DATA="${names[*]}" EXTRA_ARGS="${extra[*]}"
export METHODS="${METHODS:-fastv sequential random}" RATIOS="${RATIOS:-0.5 0.75 0.9}" LAYERS="${LAYERS:-2}"
export CACHE_MODE="${CACHE_MODE:-static}" SCORE_DTYPE="${SCORE_DTYPE:-float32}"
seqprune_grid
