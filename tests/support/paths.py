"""Where the repository's parts are, for tests in any folder under tests/."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN_PY = REPO / "eval" / "VLMEvalKit" / "run.py"
EVAL_DIR = RUN_PY.parent
