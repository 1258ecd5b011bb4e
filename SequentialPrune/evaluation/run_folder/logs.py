"""The per-sample logs of a run folder (pruning stats, failed rows) and keeping one line per sample.

Each process appends to its own ``<log dir>/<dataset>.rank<R>.jsonl``, so ranks
never interleave lines. A resumed run generates some samples again, so their old
lines must go: :func:`prune_logs` keeps, for every sample the harness kept, its
newest line, and drops the rest.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from ..safe_io import write_text_atomic

STATS_DIR = "seqprune_stats"
FAILURES_DIR = "seqprune_failures"
LOG_DIRS = (STATS_DIR, FAILURES_DIR)


def safe_name(dataset: Optional[str]) -> str:
    """The file-name form of a dataset name used by the per-sample logs."""
    return re.sub(r"[^\w.+-]", "_", dataset or "no_dataset")


def log_files(run_dir: Path, dataset: str) -> List[Path]:
    """Per-rank JSONL logs (stats and failed rows) of ``dataset``."""
    out = []
    for sub in LOG_DIRS:
        out += sorted((Path(run_dir) / sub).glob(f"{safe_name(dataset)}.rank*.jsonl"))
    return out


def records(path: Path):
    """(line number, line, record) of every JSON object line of ``path``."""
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash of an older version
        if isinstance(rec, dict):
            yield n, line, rec


def prune_logs(run_dir: Path, dataset: str, keep: Iterable[str]) -> int:
    """Keep one line per sample of ``keep`` in ``dataset``'s logs (the newest); return the lines dropped."""
    keep = {str(k) for k in keep}
    dropped = 0
    for sub in LOG_DIRS:
        files = sorted((Path(run_dir) / sub).glob(f"{safe_name(dataset)}.rank*.jsonl"))
        newest: Dict[str, tuple] = {}
        parsed = {}
        for fi, f in enumerate(files):
            parsed[f] = list(records(f))
            for n, _, rec in parsed[f]:
                key = str(rec.get("index"))
                order = (rec.get("logged_at") or 0, fi, n)
                if key in keep and (key not in newest or order >= newest[key][0]):
                    newest[key] = (order, f, n)
        for f in files:
            lines = [line for n, line, rec in parsed[f]
                     if newest.get(str(rec.get("index")), (None, None, None))[1:] == (f, n)]
            before = len(f.read_text(encoding="utf-8", errors="replace").splitlines())
            if len(lines) == before:
                continue
            dropped += before - len(lines)
            if lines:
                write_text_atomic(f, "\n".join(lines) + "\n")
            else:
                f.unlink()
    return dropped
