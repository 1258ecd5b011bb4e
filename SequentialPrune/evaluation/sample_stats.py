"""Per-sample pruning statistics: the JSONL log each process appends one line per sample to.

The sample's index comes from the row tracker (``rows.RowGuard``). Each process
appends to its own file, so ranks never interleave lines, and each line is
written whole or not at all (``safe_io.append_line``).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

from .rows import plain
from .run_folder.logs import safe_name
from .safe_io import append_line


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
        append_line(self.path(record.get("dataset")), json.dumps(record, default=plain))
