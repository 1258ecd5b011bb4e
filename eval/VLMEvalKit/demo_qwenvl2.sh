#!/usr/bin/env bash
# The paper's Qwen2-VL-2B-Instruct table, one process: unpruned, Sequential Prune and FastV at ratios
# 0.5 0.75 0.9 1.0 (1.0: no image token from layer K on, the original Qwen grid's reference column) x layers
# 2 3 5 on DocVQA_VAL and OCRBench, then a summary table. The original Qwen scripts passed no
# --fast-v-sequential-prune and their Qwen pruning code was never published; both methods run here.
# As the paper ran it: the paper protocol (256-2048 x 28x28 pixels, 50 new tokens, the checkpoint's dtype), no KV
# cache with re-selection at every token, scores in the model's precision. CACHE_MODE=static runs the fast
# variant. Other overrides: GPUS NPROC DATA MODEL MODEL_PATH RATIOS LAYERS METHODS STEP SCORE_DTYPE WORK_DIR
# PYTHON EXTRA_ARGS DRY_RUN (see _grid.sh).
# Example: MODEL=qwen2_5vl_seqprune EXTRA_ARGS="--protocol hf" bash eval/VLMEvalKit/demo_qwenvl2.sh
set -euo pipefail
export MODEL="${MODEL:-qwen2vl_seqprune}" NPROC="${NPROC:-1}" RATIOS="${RATIOS:-0.5 0.75 0.9 1.0}"
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_grid.sh"
seqprune_grid
