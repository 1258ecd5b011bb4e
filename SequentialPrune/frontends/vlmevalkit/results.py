"""After VLMEvalKit's run loop, and after each dataset: did every model x dataset really produce results, and
what is each dataset's main metric.

``run_local_mode`` catches any exception of a model x dataset pair (a model
that fails to load included), logs "combination failed ... skipping" and
returns normally. :func:`dataset_problems` reads what it recorded in
``status.json`` and the files it wrote, so the launcher can exit non-zero
instead of losing a run silently. :func:`write_dataset_results` writes each
dataset's entry of ``seqprune_results.json`` (evaluation core) from VLMEvalKit's
primary metric and the prediction file's answer counts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Tuple

from SequentialPrune.evaluation.results.answers import count_answers
from SequentialPrune.evaluation.results.summary import result_entry, write_results
from SequentialPrune.evaluation.safe_io import read_json

from .judges import judge_used
from .run_files import RETRIED_FAIL_MSG, prediction_file

# Skip reasons that mean no usable result; others (e.g. mode_infer, test splits) are expected.
FAILED_SKIPS = {"invalid_dataset", "evaluate_returned_none", "Incomplete infer result", "No infer result found"}


def dataset_problems(work_dir: str, model: str, datasets: Iterable[str], mode: str = "all") -> Dict[str, str]:
    """{dataset: what is wrong} for one model (empty: all good)."""
    run_dir = Path(work_dir) / model
    status = (read_json(run_dir / "status.json") or {}).get("datasets", {})
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
    """(name, value) of ``dataset``'s main metric from VLMEvalKit's flattened ``metrics``: its dataset class's
    ``report_primary_metric``, except where papers report something else (``OVERRIDES``)."""
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


def answer_counts(pred_file: Path) -> Optional[Dict[str, int]]:
    """Answer counts of a VLMEvalKit prediction file (None if there is none or it has no predictions)."""
    from vlmeval.smp import INFER_FAIL_MSG, load

    if not Path(pred_file).is_file():
        return None
    try:
        data = load(str(pred_file))
    except Exception:
        return None
    if not hasattr(data, "columns") or "prediction" not in data.columns:
        return None
    return count_answers(data["prediction"], (INFER_FAIL_MSG, RETRIED_FAIL_MSG))


def dataset_record(run_dir: Path, model: str, dataset: str, problem: Optional[str] = None) -> dict:
    """The ``seqprune_results.json`` entry of one dataset, from ``status.json`` and the prediction file."""
    st = (read_json(Path(run_dir) / "status.json") or {}).get("datasets", {}).get(dataset, {})
    return result_entry(main_metric(dataset, st.get("metrics") or {}),
                        answer_counts(prediction_file(Path(run_dir), model, dataset)), problem,
                        skip_reason=st.get("skip_reason"), judge=judge_used(run_dir, dataset) or st.get("judge_model"),
                        updated_at=st.get("updated_at"))


def write_dataset_results(run_dir: Path, model: str, datasets: Iterable[str],
                          problems: Dict[str, str]) -> Dict[str, dict]:
    """Merge ``datasets``' entries into the run folder's results file; return those entries."""
    return write_results(run_dir, {ds: dataset_record(run_dir, model, ds, problems.get(ds)) for ds in datasets})
