"""Per-sample pruning statistics: which sample is running, and the JSONL log it goes to.

VLMEvalKit calls ``model.generate(message, dataset)`` without the row index, but
it always builds the prompt of that row just before, through the model's
``build_prompt`` or the dataset's. :class:`SampleTracker` notes the row at that
point. Each process appends to its own file, so ranks never interleave lines,
and each line is written whole or not at all (``io_errors.append_line``).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional, Tuple

from io_errors import append_line
from run_files import STATS_DIR, safe_name


def _plain(v):
    """numpy / pandas scalars -> Python, for JSON."""
    return v.item() if hasattr(v, "item") else v


class SampleTracker:
    """Remembers the (dataset, index) of the prompt built last."""

    def __init__(self):
        self.current: Optional[Tuple[str, object]] = None

    def note(self, line, dataset_name, data=None) -> None:
        if isinstance(line, int) or type(line).__name__.startswith("int"):
            line = data.iloc[int(line)] if data is not None else None
        idx = line.get("index") if hasattr(line, "get") else None
        self.current = (dataset_name, _plain(idx)) if idx is not None else None

    def watch(self, dataset, guard=None) -> None:
        """Note rows whose prompt the dataset builds (wraps this instance's ``build_prompt`` once).

        With a ``guard`` (``row_guard.RowGuard``), a row whose prompt cannot be
        built (bad image, empty question) becomes a recorded row failure.
        """
        if dataset is None or getattr(dataset, "_seqprune_tracker", None) is self:
            return
        orig = dataset.build_prompt
        name = getattr(dataset, "dataset_name", None)

        def build_prompt(line, *args, **kwargs):
            self.note(line, name, getattr(dataset, "data", None))
            if guard is None:
                return orig(line, *args, **kwargs)
            return guard.build_prompt(lambda ln, _ds: orig(ln, *args, **kwargs), line, name,
                                      getattr(dataset, "data", None))

        dataset.build_prompt = build_prompt
        dataset._seqprune_tracker = self

    def take(self, dataset_name) -> Optional[object]:
        """The index of the sample now generating for ``dataset_name`` (None if unknown); forgets it."""
        cur, self.current = self.current, None
        return cur[1] if cur is not None and cur[0] == dataset_name else None


class StatsLog:
    """Appends one JSON line per sample to ``<directory>/<dataset>.rank<R>.jsonl``."""

    def __init__(self, directory):
        self.directory = Path(directory)

    def path(self, dataset: Optional[str]) -> Path:
        rank = int(os.environ.get("RANK", 0))
        return self.directory / f"{safe_name(dataset)}.rank{rank}.jsonl"

    def write(self, record: dict) -> None:
        """Append one record (stamped with ``logged_at``, which orders lines across ranks and launches)."""
        record = dict(record, logged_at=time.time())
        append_line(self.path(record.get("dataset")), json.dumps(record, default=_plain))
