#!/usr/bin/env bash
# demo_llava.sh on every GPU of the machine: the same grid, each run data parallel through torchrun (one process per
# GPU, each answering every NPROC-th sample; rank 0 merges and scores). Overrides as demo_llava.sh, plus NPROC
# [the number of GPUs] and TORCHRUN. Example: NPROC=4 GPUS=0,1,2,3 bash eval/MileBench/demo_multigpu_llava.sh
set -euo pipefail
if [ -z "${NPROC:-}" ]; then
    NPROC="$(nvidia-smi -L 2>/dev/null | wc -l)"
    if [ "$NPROC" -lt 1 ]; then echo "demo_multigpu_llava.sh: no GPU found (nvidia-smi -L); set NPROC" >&2; exit 2; fi
fi
export NPROC MODEL="${MODEL:-llava_seqprune}"
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_grid.sh"
milebench_grid
