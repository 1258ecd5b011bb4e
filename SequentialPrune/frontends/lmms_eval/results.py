"""``seqprune_results.json`` from lmms-eval's results file, so ``scripts/collect_results.py`` tables our lmms-eval
runs as it does the other front ends'.

lmms-eval computes the metrics after the model has answered and writes them to
``<output_path>/<model>/<date>_results.json``. At process exit (rank 0) this reads
the newest such file of the launch, takes each task's main metric (the first of
its ``metric_list``, as lmms-eval reports it, ``name,filter`` keys), counts the
task's samples, empty answers and failed rows from our per-sample logs, and
writes the core's entries.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from SequentialPrune.evaluation.results.summary import result_entry, write_results
from SequentialPrune.evaluation.run_folder.logs import FAILURES_DIR, STATS_DIR, records
from SequentialPrune.evaluation.safe_io import read_json


def find_results_file(output_path: Optional[str], model_id: str, since: float) -> Optional[Path]:
    """The newest lmms-eval results file under ``output_path`` written after ``since`` for ``model_id``."""
    if not output_path:
        return None
    root = Path(output_path)
    root = root.parent if root.suffix in (".json", ".jsonl") else root
    found = []
    for f in root.glob("**/*_results.json"):
        if f.stat().st_mtime < since:
            continue
        rec = read_json(f) or {}
        if (rec.get("config") or {}).get("model") == model_id:
            found.append((f.stat().st_mtime, f))
    return max(found)[1] if found else None


def main_metric(task_result: dict) -> Optional[tuple]:
    """(name, value) of a task's first reported metric (``exact_match,none`` -> ``exact_match``)."""
    for key, value in task_result.items():
        if key in ("alias", "samples") or "_stderr" in key or not isinstance(value, (int, float)) \
                or isinstance(value, bool):
            continue
        return key.split(",", 1)[0], float(value)
    return None


def answer_counts(run_dir: Path, task: str) -> Optional[dict]:
    """{"samples", "empty", "failed"} of ``task`` from our per-sample logs (every rank's); None if it has none."""
    from SequentialPrune.evaluation.run_folder.logs import safe_name

    seen: Dict[str, str] = {}
    for sub, kind in ((STATS_DIR, "ok"), (FAILURES_DIR, "failed")):
        for f in sorted((run_dir / sub).glob(f"{safe_name(task)}.rank*.jsonl")):
            for _, _, rec in records(f):
                k = str(rec.get("index"))
                seen[k] = "failed" if kind == "failed" else ("empty" if rec.get("empty_answer") else "ok")
    if not seen:
        return None
    vals = list(seen.values())
    return {"samples": len(vals), "empty": vals.count("empty"), "failed": vals.count("failed")}


def summarize(results_file: Path, run_dir: Path) -> Dict[str, dict]:
    """Write ``run_dir/seqprune_results.json`` entries for every task of ``results_file``; return them."""
    rec = read_json(results_file) or {}
    entries = {}
    for task, res in (rec.get("results") or {}).items():
        counts = answer_counts(run_dir, task)
        if counts is None:  # a group's aggregate, or a task that did not run through this model
            continue
        entries[task] = result_entry(main_metric(res), counts, lmms_eval_results=str(results_file))
    return write_results(run_dir, entries) if entries else {}
