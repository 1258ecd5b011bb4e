# shellcheck shell=bash
# The demo grid, shared by the demo_*.sh scripts: source this file, then call seqprune_grid.
#
# For one model it runs the unpruned baseline, then every METHOD x RATIO x LAYER
# (Sequential Prune and the FastV baseline by default), keeps going when one run
# fails, and ends with the table from scripts/collect_results.py. Runs already
# complete are resumed, not redone (their results are reused under the same setting).
# By default the runs follow the paper: the model's paper protocol (run.py's default for
# the paper's models), no KV cache with re-selection at every generated token, and
# attention scores in the model's precision, as the original research code ran.
#
# Environment overrides (defaults in brackets):
#   MODEL       our model name, set by each demo (llava_seqprune, qwen2vl_seqprune, ...)
#   MODEL_PATH  hub id or local checkpoint directory [the model's hub id]
#   DATA        datasets [DocVQA_VAL OCRBench]
#   RATIOS      fractions of image tokens dropped [0.5 0.75 0.9]
#   LAYERS      first pruned layer K [2 3 5]
#   METHODS     pruning methods of the grid [sequential fastv]
#   STEP        percentage points per layer of the stepwise methods (sequential, random) [10]
#   CACHE_MODE  --cache-mode of the pruned runs: recompute (the original's) or static (prune at prefill,
#               decode on the pruned KV cache: much faster, answers may differ after the first token) [recompute]
#   SCORE_DTYPE --score-dtype of the attention-scored methods: model (the original's) or float32 [model]
#   WORK_DIR    output folder [<repo>/outputs/$MODEL, plus _static / _score<dtype> when those differ from the paper]
#   NPROC       processes; above 1 the runs go through torchrun --nproc-per-node=$NPROC [1]
#   GPUS        CUDA_VISIBLE_DEVICES for the runs [unchanged]
#   PYTHON      interpreter [$VENV/bin/python if it exists (VENV defaults to <repo>/.venv), else python3]
#   TORCHRUN    multi-process launcher [torchrun beside $PYTHON, else $PYTHON -m torch.distributed.run]
#   EXTRA_ARGS  more run.py flags, e.g. "--protocol hf --max-new-tokens 64 --attn-impl sdpa"
#   DRY_RUN     1: print each command instead of running it
#   LMUData     benchmark folder [~/LMUData, announced]

source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/_grid_common.sh"

seqprune_grid() {
    local here repo
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    repo="$(cd "$here/../.." && pwd)"
    if [ -z "${MODEL:-}" ]; then
        echo "seqprune_grid: set MODEL (e.g. llava_seqprune)" >&2
        return 2
    fi
    local -a data extra launcher common failed=()
    read -r -a data <<< "${DATA:-DocVQA_VAL OCRBench}"
    read -r -a extra <<< "${EXTRA_ARGS:-}"
    local cache="${CACHE_MODE:-recompute}" score="${SCORE_DTYPE:-model}" step="${STEP:-10}"
    local work_dir="${WORK_DIR:-$repo/outputs/$MODEL$(seqprune_output_suffix)}" nproc="${NPROC:-1}" python
    local -a ratios layers methods
    read -r -a ratios <<< "${RATIOS:-0.5 0.75 0.9}"  # the demos set their own
    read -r -a layers <<< "${LAYERS:-2 3 5}"
    read -r -a methods <<< "${METHODS:-sequential fastv}"
    python="$(seqprune_python)"
    mapfile -t launcher < <(seqprune_launcher "$python")
    if [ -n "${GPUS:-}" ]; then export CUDA_VISIBLE_DEVICES="$GPUS"; fi
    if [ -z "${LMUData:-}" ]; then  # run.py refuses an unset LMUData; the demos' default is said out loud
        export LMUData="$HOME/LMUData"
        mkdir -p "$LMUData"
        echo "=== LMUData is not set: using $LMUData (VLMEvalKit downloads the benchmarks there)"
    fi
    common=(--data "${data[@]}" --model "$MODEL" --work-dir "$work_dir")
    if [ -n "${MODEL_PATH:-}" ]; then common+=(--model-path "$MODEL_PATH"); fi

    _seqprune_run() {
        echo "=== $MODEL $* ($nproc process(es), work dir $work_dir)"
        if [ "${DRY_RUN:-0}" = 1 ]; then
            printf 'RUN'; printf ' %q' "${launcher[@]}" "$here/run.py" "${common[@]}" "$@" ${extra[@]+"${extra[@]}"}; echo
            return
        fi
        "${launcher[@]}" "$here/run.py" "${common[@]}" "$@" ${extra[@]+"${extra[@]}"} || failed+=("$*")
    }
    seqprune_each_setting _seqprune_run

    echo "=== summary"
    local -a summary=("$python" "$repo/scripts/collect_results.py" "$work_dir" --models "$MODEL"
        --datasets "${data[@]}" --methods "${methods[@]}" --ratios "${ratios[@]}" --layers "${layers[@]}"
        --step "$step" --cache-mode "$cache" --score-dtype "$score")
    if [ "${DRY_RUN:-0}" = 1 ]; then
        printf 'SUMMARY'; printf ' %q' "${summary[@]}"; echo
        return
    fi
    "${summary[@]}" || failed+=("collect_results")
    if [ "${#failed[@]}" -gt 0 ]; then
        printf 'FAILED: %s\n' "${failed[@]}" >&2
        return 1
    fi
}
