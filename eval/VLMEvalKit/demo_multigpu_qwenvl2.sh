#!/usr/bin/env bash
# The paper's Qwen2-VL-2B-Instruct table, torchrun --nproc-per-node=$NPROC: unpruned, Sequential Prune and FastV
# at ratios 0.5 0.75 0.9 1.0 x layers 2 3 5 on DocVQA_VAL and OCRBench, then a summary table.
# As the paper ran it (see demo_qwenvl2.sh); CACHE_MODE=static runs the fast variant. Other overrides: GPUS NPROC
# DATA MODEL MODEL_PATH RATIOS LAYERS METHODS STEP SCORE_DTYPE WORK_DIR PYTHON TORCHRUN EXTRA_ARGS DRY_RUN (_grid.sh).
# Example: GPUS=0,1 NPROC=2 bash eval/VLMEvalKit/demo_multigpu_qwenvl2.sh
set -euo pipefail
export MODEL="${MODEL:-qwen2vl_seqprune}" NPROC="${NPROC:-4}" GPUS="${GPUS-0,1,2,3}" RATIOS="${RATIOS:-0.5 0.75 0.9 1.0}"
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_grid.sh"
seqprune_grid
