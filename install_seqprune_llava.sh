#!/usr/bin/env bash
# Set up a virtual environment for Sequential Prune on LLaVA-1.5 (llava-hf) with VLMEvalKit.
# VENV overrides the location (default .venv in the repo); PYTHON the interpreter. Safe to re-run.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/scripts/_install_common.sh"
seqprune_install llava_seqprune "" demo_llava.sh
