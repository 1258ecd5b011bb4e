"""One main metric per dataset, written beside a model's results as ``seqprune_results.json``.

The value is what VLMEvalKit reports as the dataset's primary metric (its
dataset class's ``report_primary_metric`` over the metrics it recorded in
``status.json``), except where papers report something else (``OVERRIDES``).
Each entry also counts the dataset's samples, empty answers and failed rows.
Written in the launching process, where local datasets are registered, so
``scripts/collect_results.py`` needs no vlmeval and no dataset classes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Tuple

from io_errors import read_json, write_text_atomic

RESULTS_FILE = "seqprune_results.json"


def _mme(m: dict) -> Optional[Tuple[str, float]]:
    if "perception" in m and "reasoning" in m:
        return "perception+reasoning", float(m["perception"]) + float(m["reasoning"])
    return None


def _ocrbench(m: dict) -> Optional[Tuple[str, float]]:
    # The 0-100 normalised score, so averages over datasets keep one scale.
    if "Final Score Norm" in m:
        return "Final Score Norm", float(m["Final Score Norm"])
    return None


# dataset name -> metrics -> (metric name, value) or None to fall back on VLMEvalKit's choice.
OVERRIDES: Dict[str, Callable[[dict], Optional[Tuple[str, float]]]] = {"MME": _mme, "OCRBench": _ocrbench}


def main_metric(dataset: str, metrics: dict) -> Optional[Tuple[str, float]]:
    """(name, value) of ``dataset``'s main metric from VLMEvalKit's flattened ``metrics``."""
    if not metrics:
        return None
    if dataset in OVERRIDES:
        got = OVERRIDES[dataset](metrics)
        if got is not None:
            return got
    from vlmeval.dataset import DATASET_CLASSES
    from vlmeval.dataset.image_base import ImageBaseDataset

    cls = next((c for c in DATASET_CLASSES if dataset in c.supported_datasets()), ImageBaseDataset)
    reporter = getattr(cls, "report_primary_metric", ImageBaseDataset.report_primary_metric)
    primary = reporter(metrics) or {}
    if not primary:
        return None
    name = next(iter(primary))
    return name, float(primary[name])


def answer_problem(counts: Optional[dict]) -> Optional[str]:
    """A problem of the answers themselves: all empty (fails the dataset) or some rows failed."""
    from answer_counts import all_empty

    if not counts:
        return None
    if all_empty(counts):
        return (f"failed: all {counts['samples'] - counts['failed']} answers are empty (check the checkpoint's "
                "generation config and EOS token, --max-new-tokens and the chat template)")
    if counts["failed"]:
        return f"failed rows: {counts['failed']} of {counts['samples']} rows failed"
    return None


def dataset_record(run_dir: Path, model: str, dataset: str, problem: Optional[str] = None) -> dict:
    """The ``seqprune_results.json`` entry of one dataset, from ``status.json`` and the prediction file."""
    from answer_counts import count_answers
    from run_files import prediction_file

    st = read_json(Path(run_dir) / "status.json") or {}
    st = st.get("datasets", {}).get(dataset, {})
    got = main_metric(dataset, st.get("metrics") or {})
    counts = count_answers(prediction_file(Path(run_dir), model, dataset))
    return {"metric": got[0] if got else None, "value": got[1] if got else None,
            "problem": problem or answer_problem(counts), "skip_reason": st.get("skip_reason"),
            "judge": st.get("judge_model"), "updated_at": st.get("updated_at"),
            "samples": counts["samples"] if counts else None,
            "empty_answers": counts["empty"] if counts else None,
            "failed_rows": counts["failed"] if counts else None}


def write_results(run_dir: Path, model: str, datasets: Iterable[str], problems: Dict[str, str]) -> Dict[str, dict]:
    """Merge ``datasets``' entries into ``run_dir/seqprune_results.json``; return those entries.

    Called after each dataset (as VLMEvalKit finishes it) and at the end, so the
    table shows every dataset that finished even if the run dies in the next.
    """
    path = Path(run_dir) / RESULTS_FILE
    rec = read_json(path) or {}
    out = {ds: dataset_record(run_dir, model, ds, problems.get(ds)) for ds in datasets}
    rec.update(out)
    write_text_atomic(path, json.dumps(rec, indent=1, sort_keys=True) + "\n")
    return out
