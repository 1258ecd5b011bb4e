"""The row running now, and one bad row failing that row, not the dataset: recorded with its index and reason.

A harness builds each row's prompt (VLMEvalKit decodes its base64 image to a
file) and then calls the model's ``generate``, without the row index; an
exception in either ends the whole dataset there ("combination failed").
:class:`RowGuard` notes the row whose prompt was built last (the stats log takes
its index) and wraps both steps:

* an empty question, an image cell the front end marked unusable, or a prompt that cannot be built (truncated PNG, junk
  base64, a CMYK JPEG that cannot be saved as PNG, ...), and
* an exception while generating

become the row's prediction ``<fail prefix> index N: reason``. The front end
chooses the prefix: VLMEvalKit's is its own failure marker, so it counts such
rows in its ``infer_fail_rate`` and generates them again on a rerun. Each failure
is also appended to ``seqprune_failures/<dataset>.rank<R>.jsonl`` (index,
stage, reason).

Writes that cannot happen (full disk, read-only folder) are not row failures:
they stop the run (``safe_io.WriteFailed``).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Optional

from .run_folder.logs import FAILURES_DIR, safe_name
from .safe_io import append_line, write_failure

FAILED_MARK = "[seqprune] row failed:"  # in every failed row's prediction, after the front end's prefix
# A stand-in prompt for a row whose real prompt could not be built; generate() never runs the model on it.
PLACEHOLDER = [dict(type="text", value="(seqprune: this row failed before generation)")]
# Written over a blank question when the dataset loads (the front end does it): VLMEvalKit's MCQ scoring calls
# string functions on every row's question and would fail the whole dataset on the NaN a blank cell reads as.
EMPTY_QUESTION = "(empty question: seqprune records this row as failed)"
# Written over an image cell the harness could not read (the front end does it, with the reason), so that the
# row fails alone here instead of the harness failing the dataset while it loads.
UNUSABLE_IMAGE = "(seqprune: this row's image cell cannot be used) "


def plain(v):
    """numpy / pandas scalars -> Python, for JSON."""
    return v.item() if hasattr(v, "item") else v


def _blank(q) -> bool:
    return q is None or (isinstance(q, float) and math.isnan(q)) or not str(q).strip() or q == EMPTY_QUESTION


def empty_question(line) -> bool:
    """True if the row has a question column whose value is missing or blank."""
    if not hasattr(line, "get") or "question" not in line:
        return False
    return _blank(line.get("question"))


def unusable_image(reason: str) -> str:
    """The marker written over an unusable image cell, carrying ``reason``."""
    return UNUSABLE_IMAGE + reason


def image_cell_problem(line) -> Optional[str]:
    """The reason carried by a row's image-cell marker (None: no marker)."""
    cell = line.get("image") if hasattr(line, "get") else None
    return cell[len(UNUSABLE_IMAGE):] if isinstance(cell, str) and cell.startswith(UNUSABLE_IMAGE) else None


def mark_empty_questions(data) -> int:
    """Replace blank questions of a dataset table (a DataFrame) by :data:`EMPTY_QUESTION`; return how many."""
    if data is None or "question" not in getattr(data, "columns", ()):
        return 0
    blank = [_blank(q) for q in data["question"]]
    if any(blank):
        data["question"] = [EMPTY_QUESTION if b else q for q, b in zip(data["question"], blank)]
    return sum(blank)


def _row_reason(e: Exception) -> str:
    """Why the row failed; a write that cannot happen is no row failure: it stops the run (WriteFailed)."""
    wf = write_failure(e)
    if wf is not None:
        raise wf from None
    return _reason(e)


def _row(line, data):
    """The row itself when the harness passes its position in ``data``."""
    if isinstance(line, int) or type(line).__name__.startswith("int"):
        return data.iloc[int(line)] if data is not None else None
    return line


def _reason(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


class RowGuard:
    """The row running now (the one whose prompt was built last); its prompt or generation error becomes a
    recorded row failure."""

    def __init__(self, directory, fail_prefix: str = ""):
        self.directory = Path(directory)
        self.prefix = f"{fail_prefix} {FAILED_MARK}".strip()
        self.current = None      # (dataset, index) of the prompt built last
        self.claimed = True      # its index was taken by the stats log (take)
        self.pending: Optional[str] = None  # why the current row failed before generation

    @classmethod
    def beside(cls, stats_dir, fail_prefix: str = "") -> "RowGuard":
        """The guard whose log sits beside the stats folder ``stats_dir``."""
        return cls(Path(stats_dir).parent / FAILURES_DIR, fail_prefix)

    def note(self, line, dataset: Optional[str], data=None) -> None:
        """Row ``line`` (or its position in ``data``) of ``dataset`` is the one running now."""
        line = _row(line, data)
        index = line.get("index") if hasattr(line, "get") else None
        self.current, self.claimed = (dataset, plain(index)), index is None

    def take(self, dataset: Optional[str]):
        """The index of the sample now generating for ``dataset`` (None if unknown), once."""
        claimed, self.claimed = self.claimed, True  # forgotten either way, as a sample's index is used once
        if claimed or self.current is None or self.current[0] != dataset:
            return None
        return self.current[1]

    def marker(self, reason: str) -> str:
        index = self.current[1] if self.current else "?"
        return f"{self.prefix} index {index}: {reason}"

    def _record(self, stage: str, reason: str) -> None:
        dataset, index = self.current or (None, None)
        rank = int(os.environ.get("RANK", 0))
        rec = dict(dataset=dataset, index=plain(index), stage=stage, reason=reason, logged_at=time.time())
        append_line(self.directory / f"{safe_name(dataset)}.rank{rank}.jsonl", json.dumps(rec, default=str))
        print(f"[seqprune] {dataset} row {index} failed ({stage}): {reason}", flush=True)

    def build_prompt(self, build: Callable, line, dataset: Optional[str], data=None):
        """``build(line, dataset)``, or :data:`PLACEHOLDER` after recording why the row cannot run."""
        line = _row(line, data) if data is not None else line
        self.note(line, dataset)
        self.pending = None
        if empty_question(line):
            self.pending = "empty question (the TSV's question cell is blank)"
        elif image_cell_problem(line) is not None:
            self.pending = image_cell_problem(line)
        else:
            try:
                return build(line, dataset)
            except Exception as e:
                self.pending = f"prompt or image could not be built: {_row_reason(e)}"
        self._record("prompt", self.pending)
        return PLACEHOLDER

    def generate(self, gen: Callable, message, dataset=None) -> str:
        """``gen(message, dataset)``, or the failure marker of the current row."""
        if self.pending is not None:
            reason, self.pending = self.pending, None
            return self.marker(reason)
        try:
            return gen(message, dataset)
        except Exception as e:
            reason = f"generation failed: {_row_reason(e)}"
            self._record("generate", reason)
            return self.marker(reason)
