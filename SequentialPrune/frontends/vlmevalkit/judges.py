"""Which judge actually scored each dataset.

VLMEvalKit's dataset classes fall back to exact matching when the configured judge API does not answer
(``build_judge(...).working()`` is false), and say so only in a warning; ``status.json`` still names the
configured judge. :func:`recording_judge` wraps a dataset's ``evaluate``, notices that warning and records,
per dataset, what scored it in ``seqprune_judges.json`` beside ``status.json``; :func:`judge_used` reads it
back for ``seqprune_results.json``. Every evaluation rewrites its dataset's entry, so a later evaluation that
reached the judge replaces an earlier fallback.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Callable, Optional

from SequentialPrune.evaluation.safe_io import read_json, write_text_atomic

JUDGES_FILE = "seqprune_judges.json"
# The words every VLMEvalKit fallback warning shares ("OPENAI API is not working properly, will use exact
# matching for evaluation", "Judge model API is not working properly, evaluation will proceed without judge").
FALLBACK_WORDS = "not working properly"
EXACT = "exact_matching"


def fallback_label(configured: str) -> str:
    """What is recorded when ``configured`` did not answer."""
    return f"{EXACT} (the configured judge {configured} did not answer)"


def recording_judge(evaluate: Callable, dataset: str) -> Callable:
    """``evaluate(eval_file, **judge_kwargs)`` that also records which judge scored ``dataset``."""

    def wrapper(eval_file, *args, **judge_kwargs):
        configured = judge_kwargs.get("model") or EXACT
        caught = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                return evaluate(eval_file, *args, **judge_kwargs)
        finally:
            for w in caught:  # issued again outside the recorder, as they would have been
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            fell_back = configured != EXACT and any(FALLBACK_WORDS in str(w.message) for w in caught)
            used = fallback_label(configured) if fell_back else configured
            if fell_back:
                print(f"[seqprune] {dataset}: the judge {configured} did not answer; VLMEvalKit scored it by "
                      f"exact matching, and the results record that", file=sys.stderr, flush=True)
            record(Path(eval_file).parent, dataset, used)

    return wrapper


def record(run_dir: Path, dataset: str, judge: str) -> None:
    """Set ``dataset``'s entry of the run folder's judges file."""
    path = Path(run_dir) / JUDGES_FILE
    judges = read_json(path) or {}
    judges[dataset] = judge
    write_text_atomic(path, json.dumps(judges, indent=1, sort_keys=True) + "\n")


def judge_used(run_dir: Path, dataset: str) -> Optional[str]:
    """The judge that last scored ``dataset`` in ``run_dir`` (None if none was recorded)."""
    return (read_json(Path(run_dir) / JUDGES_FILE) or {}).get(dataset)
