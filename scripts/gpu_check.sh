#!/usr/bin/env bash
# The one-command GPU check: the full-size masked-reference oracle in bf16/fp16 (LLaVA-1.5-7B, Qwen2-VL-7B,
# Qwen3-VL-8B), the 7B benchmark presets (none/fastv/sequential, R 0.5/0.75/0.9, K 2, 1 and 5 images), and flash
# attention if flash_attn imports. Each part is timed; summary.json and summary.md go to $OUT_DIR
# [outputs/gpu_check]. Runs on the GPU machine's own python3 (torch 2.11, transformers 5.17) with no install.
#   bash scripts/gpu_check.sh          # on one CUDA GPU; each part stops at --part-limit (240 s)
#                                      # (the first H200 run: 292 s, docs/benchmarks.md GPU run 1)
#   bash scripts/gpu_check.sh --cpu    # the reduced CPU mode the test suite runs
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec "${PYTHON:-python3}" scripts/gpu/check.py --out "${OUT_DIR:-outputs/gpu_check}" "$@"
