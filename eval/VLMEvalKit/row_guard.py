"""One bad row fails that row, not the dataset: recorded with its index and reason, the others run.

VLMEvalKit builds each row's prompt (decoding its base64 image to a file) and
then calls ``model.generate``; an exception in either ends the whole dataset
("combination failed"). :class:`RowGuard` wraps both steps of our models:

* an empty question, or a prompt that cannot be built (truncated PNG, junk
  base64, a CMYK JPEG that VLMEvalKit cannot save as PNG, ...), and
* an exception while generating

become the row's prediction ``FAILED_PREFIX ... reason``. The prefix is
VLMEvalKit's own failure marker (``vlmeval.inference.FAIL_MSG``, which contains
``vlmeval.smp.INFER_FAIL_MSG``): VLMEvalKit counts such rows in its
``infer_fail_rate`` and generates them again on a rerun (unless
``--keep-failed``). Each failure is also appended to
``seqprune_failures/<dataset>.rank<R>.jsonl`` (index, stage, reason).

Writes that cannot happen (full disk, read-only folder) are not row failures:
they stop the run (``io_errors.WriteFailed``).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Optional

from io_errors import WriteFailed, append_line, is_write_error
from run_files import FAILURES_DIR, RETRIED_FAIL_MSG, safe_name

FAILED_PREFIX = f"{RETRIED_FAIL_MSG} [seqprune] row failed:"
# A stand-in prompt for a row whose real prompt could not be built; generate() never runs the model on it.
PLACEHOLDER = [dict(type="text", value="(seqprune: this row failed before generation)")]
# Written over a blank question when the dataset loads: VLMEvalKit's MCQ scoring calls string functions on
# every row's question and would fail the whole dataset on the NaN a blank cell reads back as.
EMPTY_QUESTION = "(empty question: seqprune records this row as failed)"


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _blank(q) -> bool:
    return q is None or (isinstance(q, float) and math.isnan(q)) or not str(q).strip() or q == EMPTY_QUESTION


def empty_question(line) -> bool:
    """True if the row has a question column whose value is missing or blank."""
    if not hasattr(line, "get") or "question" not in line:
        return False
    return _blank(line.get("question"))


def mark_empty_questions(dataset) -> int:
    """Replace blank questions of a built VLMEvalKit dataset by :data:`EMPTY_QUESTION`; return how many."""
    data = getattr(dataset, "data", None)
    if data is None or "question" not in getattr(data, "columns", ()):
        return 0
    blank = [_blank(q) for q in data["question"]]
    if any(blank):
        data["question"] = [EMPTY_QUESTION if b else q for q, b in zip(data["question"], blank)]
    return sum(blank)


def _reason(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


class RowGuard:
    """Turns a row's prompt or generation error into a recorded row failure."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.current = None      # (dataset, index) of the prompt built last
        self.pending: Optional[str] = None  # why the current row failed before generation

    @classmethod
    def beside(cls, stats_dir) -> "RowGuard":
        """The guard whose log sits beside the stats folder ``stats_dir``."""
        return cls(Path(stats_dir).parent / FAILURES_DIR)

    def marker(self, reason: str) -> str:
        index = self.current[1] if self.current else "?"
        return f"{FAILED_PREFIX} index {index}: {reason}"

    def _record(self, stage: str, reason: str) -> None:
        dataset, index = self.current or (None, None)
        rank = int(os.environ.get("RANK", 0))
        rec = dict(dataset=dataset, index=_plain(index), stage=stage, reason=reason, logged_at=time.time())
        append_line(self.directory / f"{safe_name(dataset)}.rank{rank}.jsonl", json.dumps(rec, default=str))
        print(f"[seqprune] {dataset} row {index} failed ({stage}): {reason}", flush=True)

    def build_prompt(self, build: Callable, line, dataset: Optional[str], data=None):
        """``build(line, dataset)``, or :data:`PLACEHOLDER` after recording why the row cannot run."""
        if isinstance(line, int) or type(line).__name__.startswith("int"):
            line = data.iloc[int(line)] if data is not None else line
        index = line.get("index") if hasattr(line, "get") else None
        self.current, self.pending = (dataset, _plain(index)), None
        if empty_question(line):
            self.pending = "empty question (the TSV's question cell is blank)"
        else:
            try:
                return build(line, dataset)
            except WriteFailed:
                raise
            except Exception as e:
                if is_write_error(e):
                    raise WriteFailed(e.filename, e) from None
                self.pending = f"prompt or image could not be built: {_reason(e)}"
        self._record("prompt", self.pending)
        return PLACEHOLDER

    def generate(self, gen: Callable, message, dataset=None) -> str:
        """``gen(message, dataset)``, or the failure marker of the current row."""
        if self.pending is not None:
            reason, self.pending = self.pending, None
            return self.marker(reason)
        try:
            return gen(message, dataset)
        except WriteFailed:
            raise
        except Exception as e:
            if is_write_error(e):
                raise WriteFailed(e.filename, e) from None
            reason = f"generation failed: {_reason(e)}"
            self._record("generate", reason)
            return self.marker(reason)
