"""One main metric per dataset, written beside a model's results as ``seqprune_results.json``.

The front end says what each dataset's main metric is (the harness's primary
metric, or what papers report) and counts its answers; this writes the entries,
merged with those of earlier datasets, so ``scripts/collect_results.py`` needs
no harness and no dataset classes. Each entry also counts the dataset's samples,
empty answers and failed rows.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

from ..safe_io import read_json, write_text_atomic
from .answers import all_empty

RESULTS_FILE = "seqprune_results.json"


def answer_problem(counts: Optional[dict]) -> Optional[str]:
    """A problem of the answers themselves: all empty (fails the dataset) or some rows failed."""
    if not counts:
        return None
    if all_empty(counts):
        return (f"failed: all {counts['samples'] - counts['failed']} answers are empty (check the checkpoint's "
                "generation config and EOS token, --max-new-tokens and the chat template)")
    if counts["failed"]:
        return f"failed rows: {counts['failed']} of {counts['samples']} rows failed"
    return None


def result_entry(metric: Optional[tuple], counts: Optional[dict], problem: Optional[str] = None, **extra) -> dict:
    """One dataset's entry: its main ``metric`` (name, value), answer ``counts`` and problem, if any."""
    return {"metric": metric[0] if metric else None, "value": metric[1] if metric else None,
            "problem": problem or answer_problem(counts), **extra,
            "samples": counts["samples"] if counts else None,
            "empty_answers": counts["empty"] if counts else None,
            "failed_rows": counts["failed"] if counts else None}


def write_results(run_dir: Path, entries: Dict[str, dict]) -> Dict[str, dict]:
    """Merge ``entries`` ({dataset: entry}) into ``run_dir/seqprune_results.json``; return them.

    Called after each dataset (as the harness finishes it) and at the end, so the
    table shows every dataset that finished even if the run dies in the next.
    """
    path = Path(run_dir) / RESULTS_FILE
    rec = read_json(path) or {}
    rec.update(entries)
    write_text_atomic(path, json.dumps(rec, indent=1, sort_keys=True) + "\n")
    return entries
