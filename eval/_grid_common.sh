# shellcheck shell=bash
# What the front ends' demo grids share (eval/VLMEvalKit/_grid.sh, eval/MileBench/_grid.sh): the interpreter, the
# launcher (torchrun above one process) and the grid's settings. Source it; each front end keeps its own command,
# output folder and summary.
#
# Environment read here (defaults in brackets):
#   PYTHON [$VENV/bin/python if it exists (VENV defaults to <repo>/.venv), else python3]
#   NPROC [1]   TORCHRUN [torchrun beside $PYTHON, else $PYTHON -m torch.distributed.run]
#   METHODS [sequential fastv]   RATIOS [0.5 0.75 0.9]   LAYERS [2 3 5]   STEP [10]
#   CACHE_MODE [recompute]   SCORE_DTYPE [model]

seqprune_python() {
    # The interpreter for the runs: $PYTHON, else $VENV/bin/python (VENV defaults to <repo>/.venv), else python3.
    local repo
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"
    elif [ -x "${VENV:-$repo/.venv}/bin/python" ]; then echo "${VENV:-$repo/.venv}/bin/python"
    else echo python3; fi
}

seqprune_launcher() {
    # One word per line: the command that starts a run with interpreter $1 (data parallel when NPROC > 1).
    local python="$1" nproc="${NPROC:-1}"
    local -a launcher=("$python")
    if [ "$nproc" -gt 1 ]; then  # data parallel: each process answers every NPROC-th sample
        local pydir
        pydir="$(dirname "$(command -v "$python")")"
        if [ -n "${TORCHRUN:-}" ]; then read -r -a launcher <<< "$TORCHRUN"
        elif [ -x "$pydir/torchrun" ]; then launcher=("$pydir/torchrun")
        else launcher=("$python" -m torch.distributed.run); fi
        launcher+=("--nproc-per-node=$nproc")
    fi
    printf '%s\n' "${launcher[@]}"
}

seqprune_settings() {
    # One line per run of the grid, its pruning flags: the unpruned baseline, then every METHOD x RATIO x LAYER.
    local -a ratios layers methods flags
    read -r -a ratios <<< "${RATIOS:-0.5 0.75 0.9}"
    read -r -a layers <<< "${LAYERS:-2 3 5}"
    read -r -a methods <<< "${METHODS:-sequential fastv}"
    local cache="${CACHE_MODE:-recompute}" score="${SCORE_DTYPE:-model}" step="${STEP:-10}" m r k
    echo "--prune-method none"
    for m in "${methods[@]}"; do
        for r in "${ratios[@]}"; do
            for k in "${layers[@]}"; do
                flags=(--prune-method "$m" --prune-ratio "$r" --prune-layer "$k" --cache-mode "$cache")
                case "$m" in  # stepwise schedules take a step; attention scorers a score precision
                    sequential|random) flags+=(--prune-step "$step") ;;
                esac
                case "$m" in
                    sequential|fastv|pdrop|custom) flags+=(--score-dtype "$score") ;;
                esac
                echo "${flags[*]}"
            done
        done
    done
}

seqprune_each_setting() {
    # Call "$1" once per setting of the grid, with that setting's flags.
    local line
    local -a flags settings
    mapfile -t settings < <(seqprune_settings)  # read first: the runs keep the script's standard input
    for line in "${settings[@]}"; do
        read -r -a flags <<< "$line"
        "$1" "${flags[@]}"
    done
}

seqprune_output_suffix() {
    # The output folder's suffix when the cache mode or score precision differ from the paper's.
    local suffix=""
    if [ "${CACHE_MODE:-recompute}" != recompute ]; then suffix+="_${CACHE_MODE}"; fi
    if [ "${SCORE_DTYPE:-model}" != model ]; then suffix+="_score${SCORE_DTYPE}"; fi
    echo "$suffix"
}
