#!/usr/bin/env bash
# The paper's LLaVA-1.5-7B grid on MileBench (llava-hf weights), one process: unpruned, Sequential Prune and FastV
# at ratios 0.5 0.75 0.9 x layers 2 3 5 on MileBench's 29 datasets (plus ANLS_DocVQA with DOCVQA_ANN and
# DOCVQA_IMG_DIR, Rouge_OCR_VQA with OCRVQA_DIR), then score.py's tables. As the original ran it: its LLaVA
# worker's prompts and ids, padded images, bf16 autocast, no KV cache with re-selection at every token.
# Overrides: MODEL MODEL_PATH DATA_DIR DATA RATIOS LAYERS METHODS STEP CACHE_MODE SCORE_DTYPE OUTPUT_DIR GPUS PYTHON
# EXTRA_ARGS DRY_RUN (see _grid.sh). Example: RATIOS="0.75" LAYERS="2" DATA="GPR1200" bash eval/MileBench/demo_llava.sh
set -euo pipefail
export MODEL="${MODEL:-llava_seqprune}"
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_grid.sh"
milebench_grid
