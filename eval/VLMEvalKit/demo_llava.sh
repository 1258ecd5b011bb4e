#!/usr/bin/env bash
# The paper's LLaVA-1.5-7B table (llava-hf weights), one process: unpruned, Sequential Prune and FastV at
# ratios 0.5 0.75 0.9 x layers 2 3 5 on DocVQA_VAL and OCRBench, then a summary table.
# As the paper ran it: the paper protocol (padded images, the original prompt and token ids, float16,
# 100 new tokens), no KV cache with re-selection at every token, scores in the model's precision.
# CACHE_MODE=static runs the fast variant (pruned KV cache). Other overrides: GPUS NPROC DATA MODEL MODEL_PATH
# RATIOS LAYERS METHODS STEP SCORE_DTYPE WORK_DIR PYTHON EXTRA_ARGS DRY_RUN (see _grid.sh).
# Example: MODEL=llava_seqprune_13b RATIOS="0.75" LAYERS="2" bash eval/VLMEvalKit/demo_llava.sh
set -euo pipefail
export MODEL="${MODEL:-llava_seqprune}" NPROC="${NPROC:-1}" RATIOS="${RATIOS:-0.5 0.75 0.9}"
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_grid.sh"
seqprune_grid
