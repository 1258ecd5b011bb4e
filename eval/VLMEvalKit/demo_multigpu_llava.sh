#!/usr/bin/env bash
# The paper's LLaVA-1.5-7B table (llava-hf weights), torchrun --nproc-per-node=$NPROC: unpruned, Sequential
# Prune and FastV at ratios 0.5 0.75 0.9 x layers 2 3 5 on DocVQA_VAL and OCRBench, then a summary table.
# As the paper ran it (see demo_llava.sh); CACHE_MODE=static runs the fast variant. Other overrides: GPUS NPROC
# DATA MODEL MODEL_PATH RATIOS LAYERS METHODS STEP SCORE_DTYPE WORK_DIR PYTHON TORCHRUN EXTRA_ARGS DRY_RUN (_grid.sh).
# Example: GPUS=0,1 NPROC=2 bash eval/VLMEvalKit/demo_multigpu_llava.sh
set -euo pipefail
export MODEL="${MODEL:-llava_seqprune}" NPROC="${NPROC:-4}" GPUS="${GPUS-0,1,2,3}" RATIOS="${RATIOS:-0.5 0.75 0.9}"
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_grid.sh"
seqprune_grid
