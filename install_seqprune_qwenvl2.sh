#!/usr/bin/env bash
# Set up a virtual environment for Sequential Prune on Qwen2-VL / Qwen2.5-VL with VLMEvalKit.
# VENV overrides the location (default .venv in the repo); PYTHON the interpreter. Safe to re-run.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/scripts/_install_common.sh"
seqprune_install qwen2vl_seqprune "qwen_vl_utils, torchvision" demo_qwenvl2.sh
