#!/usr/bin/env bash
# Add lmms-eval (PyPI) to an environment that has SequentialPrune, so that the lmms-eval front end runs
# (eval/lmms-eval/README.md). install_seqprune_*.sh call it (LMMS_EVAL=0 skips it); run it alone on an
# existing environment: VENV=/path bash scripts/install_lmms_eval.sh. Safe to re-run.
#
# lmms-eval is installed without its declared dependencies: they pin av<16 and latex2sympy2's
# antlr4-python3-runtime 4.7.2 and pull opencv-python-headless, while ms-vlmeval (the VLMEvalKit front end)
# needs antlr4 4.11.1 and opencv-python (both OpenCV wheels share the cv2 folder). The dependencies an
# image-task run needs are this project's `lmms-eval` extra (pyproject.toml), at the ranges tested.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
vpy="$venv/bin/python"
if [ ! -x "$vpy" ]; then
    echo "install_lmms_eval: no $vpy; run install_seqprune_llava.sh first (or set VENV)" >&2
    exit 1
fi
echo "== installing lmms-eval 0.7.3 (without its own pins) and the lmms-eval extra into $venv"
"$vpy" -m pip install --no-deps "lmms-eval==0.7.3"
"$vpy" -m pip install -e "$repo[lmms-eval]"
echo "== checking that lmms-eval finds our models"
"$vpy" -c "from lmms_eval.models import get_model; print('lmms-eval model seqprune ->', get_model('seqprune').__name__)"
"$vpy" -m lmms_eval --help > /dev/null
