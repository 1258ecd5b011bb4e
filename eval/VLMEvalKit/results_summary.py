"""One main metric per dataset, written beside a model's results as ``seqprune_results.json``.

The value is what VLMEvalKit reports as the dataset's primary metric (its
dataset class's ``report_primary_metric`` over the metrics it recorded in
``status.json``), except where papers report something else (``OVERRIDES``).
Written in the launching process, where local datasets are registered, so
``scripts/collect_results.py`` needs no vlmeval and no dataset classes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Tuple

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


def write_results(run_dir: Path, datasets: Iterable[str], problems: Dict[str, str]) -> Path:
    """Merge this launch's datasets into ``run_dir/seqprune_results.json``."""
    path = Path(run_dir) / RESULTS_FILE
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        rec = {}
    try:
        status = json.loads((Path(run_dir) / "status.json").read_text()).get("datasets", {})
    except (OSError, json.JSONDecodeError):
        status = {}
    for ds in datasets:
        st = status.get(ds, {})
        got = main_metric(ds, st.get("metrics") or {})
        rec[ds] = {"metric": got[0] if got else None, "value": got[1] if got else None,
                   "problem": problems.get(ds), "skip_reason": st.get("skip_reason"),
                   "judge": st.get("judge_model"), "updated_at": st.get("updated_at")}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path
