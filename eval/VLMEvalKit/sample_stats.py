"""Per-sample pruning statistics: which sample is running, and the JSONL log it goes to.

VLMEvalKit calls ``model.generate(message, dataset)`` without the row index, but
it always builds the prompt of that row just before, through the model's
``build_prompt`` or the dataset's. :class:`SampleTracker` notes the row at that
point. Each process appends to its own file, so ranks never interleave lines.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional, Tuple

STATS_DIR = "seqprune_stats"


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

    def watch(self, dataset) -> None:
        """Note rows whose prompt the dataset builds (wraps this instance's ``build_prompt`` once)."""
        if dataset is None or getattr(dataset, "_seqprune_tracker", None) is self:
            return
        orig = dataset.build_prompt

        def build_prompt(line, *args, **kwargs):
            self.note(line, getattr(dataset, "dataset_name", None), getattr(dataset, "data", None))
            return orig(line, *args, **kwargs)

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
        name = re.sub(r"[^\w.+-]", "_", dataset or "no_dataset")
        return self.directory / f"{name}.rank{rank}.jsonl"

    def write(self, record: dict) -> None:
        path = self.path(record.get("dataset"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=_plain) + "\n")
