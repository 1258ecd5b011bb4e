"""How many of a dataset's answers are empty, and how many rows failed.

An empty answer scores 0 like a wrong one, and a harness's failure rate does not
count it (VLMEvalKit's does not): a checkpoint that answers nothing would score
0.0 silently.
These counts go into ``seqprune_results.json``, the run summary and the
table; a dataset whose answers are all empty fails the run.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from ..rows import FAILED_MARK
from ..run_folder.logs import FAILURES_DIR, safe_name


def _is_empty(pred) -> bool:
    # An empty string is written to the xlsx as an empty cell and reads back as NaN.
    return pred is None or (isinstance(pred, float) and math.isnan(pred)) or not str(pred).strip()


def count_answers(predictions: Iterable, fail_markers: Sequence[str] = ()) -> Dict[str, int]:
    """{"samples", "empty", "failed"} of a dataset's predictions; a failed row holds one of ``fail_markers``
    (the harness's own failure markers) or our :data:`~SequentialPrune.evaluation.rows.FAILED_MARK`."""
    preds = list(predictions)
    markers = (FAILED_MARK, *fail_markers)
    failed = sum(1 for p in preds if not _is_empty(p) and any(m in str(p) for m in markers))
    return {"samples": len(preds), "empty": sum(1 for p in preds if _is_empty(p)), "failed": failed}


def all_empty(counts: Optional[Dict[str, int]]) -> bool:
    """Every answer that did not fail is empty (and there is at least one such)."""
    return bool(counts) and counts["samples"] > counts["failed"] and counts["empty"] == counts["samples"] - counts["failed"]


def failure_examples(run_dir: Path, dataset: str, limit: int = 3) -> List[str]:
    """'index N: reason' of the first failed rows logged for ``dataset``."""
    out = []
    for f in sorted((Path(run_dir) / FAILURES_DIR).glob(f"{safe_name(dataset)}.rank*.jsonl")):
        for line in f.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            out.append(f"index {rec.get('index')}: {rec.get('reason')}")
    return out[:limit]
