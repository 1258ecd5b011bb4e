"""The original's ``score.py``: every model's ``eval.json`` files gathered into ``result.json`` and ``result.csv``.

``result.json``: ``{model: {group: {dataset: eval.json or {}}}}`` over the original's three groups (its dataset
lists below, ``Rouge_OCR_VQA`` in Diagnostic; ``ANLS_DocVQA`` is in none, as in the original). ``result.csv``:
one row per model, ``Model`` then ``"<dataset> (<metric>)"`` = ``round(value * 100, 2)`` for every metric but the
image-quantity ones and ``Diff-Accuracy``; appended to an existing file without a header, as the original does.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

GROUPS: Dict[str, List[str]] = {
    "Realistic Temporal": [
        "ActionLocalization", "ActionPrediction", "ActionSequence", "CharacterOrder", "CounterfactualInference",
        "EgocentricNavigation", "MovingAttribute", "MovingDirection", "ObjectExistence", "ObjectInteraction",
        "ObjectShuffle", "SceneTransition", "StateChange"],
    "Realistic Semantic": [
        "ALFRED", "CLEVR-Change", "DocVQA", "IEdit", "MMCoQA", "MultiModalQA", "nuscenes", "OCR-VQA", "SlideVQA",
        "Spot-the-Diff", "TQA", "WebQA", "WikiVQA"],
    "Diagnostic": ["TextNeedleInAHaystack", "ImageNeedleInAHaystack", "GPR1200", "Rouge_OCR_VQA"],
}
NOT_IN_CSV = ("image_quantity_level-Accuracy", "image_quantity_level-Result", "Diff-Accuracy")


def group_of(dataset: str):
    return next((g for g, names in GROUPS.items() if dataset in names), None)


def collect(result_dir, models: List[str], quiet: bool = False) -> dict:
    """result.json's content: each model's eval.json per group and dataset ({} where there is none)."""
    say = (lambda _msg: None) if quiet else print
    out = {}
    for model in models:
        say(f"Collecting result of {model}...")
        per_group = {}
        for group, names in GROUPS.items():
            found = {}
            for ds in names:
                path = Path(result_dir) / model / ds / "eval.json"
                if not path.exists():
                    say(f"\t{model}--{ds}  No evaluation file found")
                    found[ds] = {}
                    continue
                try:
                    found[ds] = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError) as e:  # the original reused the previous dataset's
                    raise ValueError(f"{path} cannot be read ({e}); run evaluate.py for {model} {ds} again") from None
            per_group[group] = found
        out[model] = per_group
    return out


def csv_rows(result: dict) -> List[dict]:
    rows = []
    for model, groups in result.items():
        row = {"Model": model}
        for datasets in groups.values():
            for ds, metrics in datasets.items():
                for metric, value in metrics.items():
                    if metric not in NOT_IN_CSV:
                        row[f"{ds} ({metric})"] = round(value * 100, 2)
        rows.append(row)
    return rows


def write_tables(result_dir, models: List[str], quiet: bool = False) -> dict:
    """Write ``result.json`` and ``result.csv`` under ``result_dir``; return result.json's content (``quiet``:
    without the original's line per missing eval.json)."""
    import pandas as pd

    from SequentialPrune.evaluation.safe_io import write_text_atomic

    result = collect(result_dir, models, quiet)
    write_text_atomic(Path(result_dir) / "result.json", json.dumps(result, ensure_ascii=False, indent=4))
    df = pd.DataFrame(csv_rows(result))
    csv = Path(result_dir) / "result.csv"
    df.to_csv(csv, mode="a" if csv.exists() else "w", header=not csv.exists(), index=False)
    return result


def main(argv=None) -> int:
    """``eval/MileBench/score.py``: the original's command line."""
    import argparse

    p = argparse.ArgumentParser(prog="score.py", description="Gather MileBench eval.json files into tables")
    p.add_argument("--result-dir", type=str, required=True)
    p.add_argument("--models", type=str, nargs="+", help="list of models")
    a = p.parse_args(argv)
    if not a.models:
        p.error("give --models (the folders under --result-dir)")
    try:
        write_tables(a.result_dir, a.models)
    except ValueError as e:
        print(f"score.py: error: {e}")
        return 1
    return 0
