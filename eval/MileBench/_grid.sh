# shellcheck shell=bash
# The MileBench demo grid, shared by the demo_*.sh scripts here: source this file, then call milebench_grid.
#
# For one model: the unpruned baseline, then every METHOD x RATIO x LAYER (Sequential Prune and FastV by
# default), each one launch of generate.py over every dataset (one run folder per setting, resumed when run
# again), keeps going when one run fails, and ends with score.py's tables over all the settings and one summary
# table with the efficiency columns (SequentialPrune/frontends/milebench/summary.py).
# By default the runs follow the original's MileBench runs: the paper protocol (its LLaVA worker's template, ids and
# padded images; 512 new tokens, 100 on ANLS_DocVQA, 50 on Rouge_OCR_VQA), no KV cache with re-selection at every
# generated token, attention scores in the model's precision.
#
# Environment overrides (defaults in brackets):
#   MODEL       our model name [llava_seqprune]          MODEL_PATH  hub id or local checkpoint [the model's]
#   DATA_DIR    MileBench folder [<repo>/data/MileBench]
#   DATA        datasets [MileBench's 29, plus ANLS_DocVQA and Rouge_OCR_VQA where their files are given]
#   DOCVQA_ANN DOCVQA_IMG_DIR   DocVQA imdb_val.npy and its page images (ANLS_DocVQA) [unset: skipped]
#   OCRVQA_DIR  the OCR-VQA datasets folder (Rouge_OCR_VQA) [unset: skipped]
#   RATIOS [0.5 0.75 0.9]  LAYERS [2 3 5]  METHODS [sequential fastv]  STEP percentage points per layer [10]
#   CACHE_MODE  recompute (the original's) or static [recompute]   SCORE_DTYPE model or float32 [model]
#   OUTPUT_DIR  [<repo>/outputs/milebench_$MODEL, plus _static / _score<dtype> when those differ from the paper]
#   GPUS        CUDA_VISIBLE_DEVICES [unchanged]           PYTHON  interpreter [$VENV/bin/python, else python3]
#   NPROC       processes; above 1 through torchrun --nproc-per-node=$NPROC (data parallel) [1]
#   TORCHRUN    multi-process launcher [torchrun beside $PYTHON, else $PYTHON -m torch.distributed.run]
#   EXTRA_ARGS  more generate.py flags                      DRY_RUN 1: print each command instead of running it
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/_grid_common.sh"

MILEBENCH_29="ActionLocalization ActionPrediction ActionSequence CharacterOrder CounterfactualInference \
EgocentricNavigation MovingAttribute MovingDirection ObjectExistence ObjectInteraction ObjectShuffle SceneTransition \
StateChange ALFRED CLEVR-Change DocVQA IEdit MMCoQA MultiModalQA nuscenes OCR-VQA SlideVQA Spot-the-Diff TQA WebQA \
WikiVQA TextNeedleInAHaystack ImageNeedleInAHaystack GPR1200"

milebench_grid() {
    local here repo
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    repo="$(cd "$here/../.." && pwd)"
    local model="${MODEL:-llava_seqprune}" python
    python="$(seqprune_python)"
    local -a data extra common launcher failed=() names=()
    local default_data="$MILEBENCH_29"
    if [ -n "${DOCVQA_ANN:-}" ]; then default_data+=" ANLS_DocVQA"; fi
    if [ -n "${OCRVQA_DIR:-}" ]; then default_data+=" Rouge_OCR_VQA"; fi
    read -r -a data <<< "${DATA:-$default_data}"
    read -r -a extra <<< "${EXTRA_ARGS:-}"
    local out="${OUTPUT_DIR:-$repo/outputs/milebench_$model$(seqprune_output_suffix)}"
    if [ -n "${GPUS:-}" ]; then export CUDA_VISIBLE_DEVICES="$GPUS"; fi
    mapfile -t launcher < <(seqprune_launcher "$python")
    common=(--data_dir "${DATA_DIR:-$repo/data/MileBench}" --dataset_name "${data[@]}" --model_name "$model"
            --output_dir "$out")
    if [ -n "${MODEL_PATH:-}" ]; then common+=(--model-path "$MODEL_PATH"); fi
    if [ -n "${DOCVQA_ANN:-}" ]; then common+=(--docvqa-ann "$DOCVQA_ANN" --docvqa-img-dir "${DOCVQA_IMG_DIR:?set DOCVQA_IMG_DIR}"); fi
    if [ -n "${OCRVQA_DIR:-}" ]; then common+=(--ocrvqa-dir "$OCRVQA_DIR"); fi

    _milebench_run() {
        echo "=== $model $* (output $out)"
        if [ "${DRY_RUN:-0}" = 1 ]; then
            printf 'RUN'; printf ' %q' "${launcher[@]}" "$here/generate.py" "${common[@]}" "$@" ${extra[@]+"${extra[@]}"}; echo
            return
        fi
        "${launcher[@]}" "$here/generate.py" "${common[@]}" "$@" ${extra[@]+"${extra[@]}"} || failed+=("$*")
    }
    seqprune_each_setting _milebench_run
    echo "=== summary (score.py over every setting)"
    if [ "${DRY_RUN:-0}" = 1 ]; then
        echo "SUMMARY $python $here/score.py --result-dir $out --models <every run folder under $out>"
        return
    fi
    local d
    for d in "$out"/*/; do [ -f "$d/seqprune_setting.json" ] && names+=("$(basename "$d")"); done
    if [ "${#names[@]}" -gt 0 ]; then  # score.py's own lines (one per dataset it finds no eval.json for) to a log
        rm -f "$out/result.csv"  # score.py appends, as the original's did: rebuilt here over every setting
        "$python" "$here/score.py" --result-dir "$out" --models "${names[@]}" > "$out/score.log" || failed+=("score.py")
        "$python" -m SequentialPrune.frontends.milebench.summary "$out" || failed+=("summary")
        echo "score.py's tables: $out/result.json, $out/result.csv; times: $out/execution_times.csv"
    fi
    if [ "${#failed[@]}" -gt 0 ]; then
        printf 'FAILED: %s\n' "${failed[@]}" >&2
        return 1
    fi
}
