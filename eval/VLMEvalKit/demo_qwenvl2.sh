#!/usr/bin/env bash
# Sequential Prune vs FastV vs unpruned on Qwen2-VL-2B-Instruct, one process.
# Grid: ratios 0.5 0.75 0.9 x layers 2 3 5 on DocVQA_VAL and OCRBench, then a summary table.
# Overrides: GPUS NPROC DATA MODEL MODEL_PATH RATIOS LAYERS METHODS STEP WORK_DIR PYTHON EXTRA_ARGS (see _grid.sh).
# Example: MODEL=qwen2_5vl_seqprune bash eval/VLMEvalKit/demo_qwenvl2.sh
set -euo pipefail
export MODEL="${MODEL:-qwen2vl_seqprune}" NPROC="${NPROC:-1}"
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_grid.sh"
seqprune_grid
