# shellcheck shell=bash
# Shared body of install_seqprune_llava.sh and install_seqprune_qwenvl2.sh (source it, then call
# seqprune_install). Creates a virtual environment (no conda), installs the project with its eval and
# test extras, checks the imports and prints the next command. Safe to re-run: an existing
# environment is reused and pip only adds what is missing.
#
# Environment overrides:
#   VENV    where the environment goes [<repo>/.venv]
#   PYTHON  interpreter that creates it [python3]; needs Python >= 3.10 and its venv module
#   LMMS_EVAL  0 leaves lmms-eval out (scripts/install_lmms_eval.sh) [1]

seqprune_install() {
    # $1: label for messages; $2: extra modules to import-check; $3: the demo script to suggest.
    local label="$1" extra_imports="$2" demo="$3"
    local repo venv python
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    venv="${VENV:-$repo/.venv}"
    python="${PYTHON:-python3}"

    if ! command -v "$python" > /dev/null; then
        echo "install: no $python found; set PYTHON to a Python >= 3.10 interpreter" >&2
        return 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
        echo "install: $("$python" --version 2>&1) is too old; SequentialPrune needs Python >= 3.10 (set PYTHON)" >&2
        return 1
    fi
    if [ -x "$venv/bin/python" ]; then
        echo "== reusing the virtual environment $venv"
    else
        echo "== creating the virtual environment $venv"
        if ! "$python" -m venv "$venv"; then
            echo "install: '$python -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
            return 1
        fi
    fi
    local vpy="$venv/bin/python"
    echo "== installing SequentialPrune with its eval and test extras ($label)"
    # pip >= 21.3 is needed for editable installs from pyproject.toml.
    "$vpy" -m pip install --upgrade "pip>=23"
    "$vpy" -m pip install -e "$repo[eval,test]"
    echo "== checking the imports"
    "$vpy" -c "import SequentialPrune, vlmeval${extra_imports:+, $extra_imports}; print('SequentialPrune', SequentialPrune.__version__, 'with vlmeval at', vlmeval.__path__[0])"
    if [ "${LMMS_EVAL:-1}" != 0 ]; then  # the lmms-eval front end (eval/lmms-eval/README.md); LMMS_EVAL=0 skips it
        VENV="$venv" bash "$repo/scripts/install_lmms_eval.sh"
    fi
    cat <<MSG

Installed into $venv. Next:
    $venv/bin/python -m pytest                 # the test suite, offline, on CPU
    bash $repo/eval/VLMEvalKit/demo_tiny.sh     # the whole evaluation path offline, on CPU, in minutes
With the hub (the checkpoint and the benchmark are downloaded):
    source $venv/bin/activate
    python $repo/eval/VLMEvalKit/run.py --data OCRBench --model ${label} --prune-method sequential --prune-ratio 0.75 --prune-layer 2
or the paper's whole grid (the demos use $venv/bin/python by themselves):
    bash $repo/eval/VLMEvalKit/$demo
Offline machines: put the benchmark TSVs in \$LMUData (see eval/VLMEvalKit/README.md).
MSG
}
