"""After VLMEvalKit's run loop: did every model x dataset really produce results?

``run_local_mode`` catches any exception of a model x dataset pair (a model
that fails to load included), logs "combination failed ... skipping" and
returns normally. This reads what it recorded in ``status.json`` and the files
it wrote, so the launcher can exit non-zero instead of losing a run silently.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List

# Skip reasons that mean no usable result; others (e.g. mode_infer, test splits) are expected.
FAILED_SKIPS = {"invalid_dataset", "evaluate_returned_none", "Incomplete infer result", "No infer result found"}


def prediction_file(run_dir: Path, model: str, dataset: str) -> Path:
    from vlmeval.smp import get_pred_file_path
    return Path(get_pred_file_path(str(run_dir), model, dataset, use_env_format=True))


def problems(work_dir: str, models: Iterable[str], datasets: Iterable[str], mode: str = "all") -> List[str]:
    """One line per model x dataset without results (empty list: all good)."""
    return [f"{m} x {d}: {why}" for m in models for d, why in dataset_problems(work_dir, m, datasets, mode).items()]


def dataset_problems(work_dir: str, model: str, datasets: Iterable[str], mode: str = "all") -> Dict[str, str]:
    """{dataset: what is wrong} for one model."""
    run_dir = Path(work_dir) / model
    try:
        status = json.loads((run_dir / "status.json").read_text()).get("datasets", {})
    except (OSError, json.JSONDecodeError):
        status = {}
    out = {}
    for ds in datasets:
        st = status.get(ds, {})
        pred = prediction_file(run_dir, model, ds)
        if st.get("error_message"):
            out[ds] = f"failed: {st['error_message']}"
        elif st.get("skip_reason") in FAILED_SKIPS:
            out[ds] = f"skipped: {st['skip_reason']}"
        elif mode != "eval" and not pred.is_file():
            out[ds] = f"no prediction file {pred}"
        elif mode != "infer" and not st.get("metrics") and not st.get("skip_reason"):
            out[ds] = f"no evaluation result recorded in {run_dir / 'status.json'}"
    return out
