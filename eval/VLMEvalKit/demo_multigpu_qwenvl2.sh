#!/usr/bin/env bash
# Sequential Prune vs FastV vs unpruned on Qwen2-VL-2B-Instruct, torchrun --nproc-per-node=$NPROC.
# Grid: ratios 0.5 0.75 0.9 x layers 2 3 5 on DocVQA_VAL and OCRBench, then a summary table.
# Overrides: GPUS NPROC DATA MODEL MODEL_PATH RATIOS LAYERS METHODS STEP WORK_DIR PYTHON TORCHRUN EXTRA_ARGS (_grid.sh).
# Example: GPUS=0,1 NPROC=2 bash eval/VLMEvalKit/demo_multigpu_qwenvl2.sh
set -euo pipefail
export MODEL="${MODEL:-qwen2vl_seqprune}" NPROC="${NPROC:-4}" GPUS="${GPUS-0,1,2,3}"
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_grid.sh"
seqprune_grid
