#!/usr/bin/env bash
# Sequential Prune vs FastV vs unpruned on LLaVA-1.5-7B (llava-hf), one process.
# Grid: ratios 0.5 0.75 0.9 x layers 2 3 5 on DocVQA_VAL and OCRBench, then a summary table.
# Overrides: GPUS NPROC DATA MODEL MODEL_PATH RATIOS LAYERS METHODS STEP WORK_DIR PYTHON EXTRA_ARGS (see _grid.sh).
# Example: MODEL=llava_seqprune_13b RATIOS="0.75" LAYERS="2" bash eval/VLMEvalKit/demo_llava.sh
set -euo pipefail
export MODEL="${MODEL:-llava_seqprune}" NPROC="${NPROC:-1}"
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_grid.sh"
seqprune_grid
