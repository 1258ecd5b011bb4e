"""MileBench scoring as the original's ``evaluate.py`` computes it, per dataset: ``eval.json`` (and
``eval_score.json``, ``pred_with_extracted.json`` for multiple choice) beside ``pred.json``.

The rules, restated from the original:

* **normalisation** (``process``): newlines and tabs to spaces, strip; then for each of ``; / [ ] " { } ( ) = +
  \\ _ - > < @ ` , ? !``: removed if it stands next to a space in the *original* text, or the text has a digit,
  comma, digit; else replaced by a space; then up to 32 periods not followed by a digit are removed (the
  original passes ``re.UNICODE`` (32) as ``re.sub``'s count); strip ``'`` then ``"``, strip, lower-case;
* **multiple choice**: answer, reference and options normalised; options lettered A..Z, then AA.., BA..; the
  prediction matched (1) against ``"<letter> <option>"`` normalised again, by regex search, first hit's first
  character; (2) against the options with spaces removed, in the prediction with spaces removed, the hit mapped
  back to its option; (3) a 1-2 character answer that is a letter; else every character of the answer that is
  an option letter, upper-cased and joined; an empty answer is ``"C"``. Correct if that equals the reference's
  letter;
* **open-ended**: ROUGE-L F of the normalised answer against the normalised reference (``rouge`` package), 0 for
  an empty answer;
* **needle**: the normalised reference among the answer's words (NeedleInAHaystack sets), or in the answer
  (MMCoQA);
* image-quantity levels from the annotation's image count: Few (< 6), Medium (6-31), Many (> 31);
* **ANLS_DocVQA**: per sample, lower-cased, ``1 - Levenshtein / max length`` per answer, 0 below 0.5, the best;
  0 for an empty answer; the mean (``mean_anls``);
* means as the original takes them (``np.mean``, or a sum over the count), so the numbers are its own;
* **Rouge_OCR_VQA**: ROUGE-L F against the first reference answer (``Rouge-L f``), no levels.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Tuple

from .data import DOCVQA, OCRVQA

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # as written in the original: the look-behind is really a look-ahead
_PERIOD_COUNT = 32  # re.UNICODE, passed where re.sub takes its count
LEVELS = ("Few", "Medium", "Many")
REGEX_SPECIALS = "\\.^$*+?{}[]|()"


def normalise(text: str) -> str:
    """The original's answer normalisation (``Eval.process``)."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    numeric = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for p in PUNCTUATION:
        spaced = (p + " ") in text or (" " + p) in text
        out = out.replace(p, "" if spaced or numeric else " ")
    out = _PERIOD.sub("", out, count=_PERIOD_COUNT)
    return out.strip("'").strip('"').strip().lower()


def letter(i: int) -> str:
    """The original's option label: A..Z, then 'A' + A.., then 'B' + A.."""
    if i < 26:
        return chr(65 + i)
    return ("A" if i < 52 else "B") + chr(65 + i - (26 if i < 52 else 52))


def level(n_images: int) -> str:
    return "Few" if n_images < 6 else "Many" if n_images > 31 else "Medium"


def _escaped(option: str) -> str:
    text = normalise(option)
    for ch in REGEX_SPECIALS:  # each character in turn, as the original escapes them
        text = text.replace(ch, "\\" + ch)
    return text


def match_choice(answer: str, options: Dict[str, str]) -> str:
    """The option letter(s) an answer names (the original's three stages and its fallback)."""
    if answer == "":
        return "C"
    try:
        hit = re.search("(" + "|".join(_escaped(f"{k} {v}") for k, v in options.items()) + ")", answer, re.S)
        if hit:
            return hit.group(0)[0].upper()
        squeezed = {k: _escaped(v).replace(" ", "") for k, v in options.items()}
        hit = re.search("(" + "|".join(squeezed.values()) + ")", answer.replace(" ", ""), re.S)
        if hit:
            for k, v in squeezed.items():
                if hit[0].strip() == v:
                    return k.upper()
        if len(answer) in (1, 2) and answer.upper() in options:
            return answer.upper()
    except Exception as e:  # a pattern the regex engine refuses: the original returns the answer itself
        print(f"something wrong during match_choice {answer}: {e}")
        return answer
    return "".join(c.upper() for c in answer if c.upper() in options)


def _attach(predictions: List[dict], annotation: dict, choices: bool) -> None:
    """Give each prediction its annotation's level, images (and options): the original's checks included."""
    data = annotation["data"]
    if len(predictions) != len(data):
        raise ValueError(f"There is prediction absent. {len(predictions)}!={len(data)}")
    by_id = {p["sample_id"]: p for p in predictions}
    for sample in data:
        pred = by_id[int(sample["sample_id"])]
        if choices:
            pred["choice_list"] = sample["task_instance"]["choice_list"]
        pred["image_quantity_level"] = sample["image_quantity_level"]
        pred["image"] = sample["task_instance"]["images_path"]


def _by_level(scores: List[Tuple[str, float]]) -> dict:
    import numpy as np

    groups = {k: [s for lv, s in scores if lv == k] for k in LEVELS}
    return {"image_quantity_level-Accuracy": {k: (float(np.mean(v)) if v else 0) for k, v in groups.items()},
            "image_quantity_level-Result": {k: [sum(v), len(v)] for k, v in groups.items()}}


def _rouge_l(answer: str, reference: str) -> float:
    from rouge import Rouge

    if reference == "":
        raise AssertionError("an empty reference answer (the original asserts it never is)")
    return 0 if answer == "" else Rouge().get_scores(answer, reference)[0]["rouge-l"]["f"]


def score_multichoice(predictions: List[dict], annotation: dict) -> Tuple[List[dict], dict, List[dict]]:
    """(predictions with ``extracted``/``result``, eval.json, eval_score.json) of a multiple-choice set."""
    _attach(predictions, annotation, choices=True)
    scores, rows = [], []
    for p in predictions:
        p["gt_response"] = normalise(p["gt_response"])
        p["pred_response"] = normalise(p["pred_response"])
        p["choice_list"] = [normalise(c) for c in p["choice_list"]]
        if p["gt_response"] not in p["choice_list"]:
            raise AssertionError(f"sample {p['sample_id']}: the reference is not among the options")
        options = {letter(i): c for i, c in enumerate(p["choice_list"])}
        picked = match_choice(p["pred_response"], options)
        score = int(picked == letter(p["choice_list"].index(p["gt_response"])))
        p["extracted"], p["result"] = picked, score
        rows.append({"id": str(p["sample_id"]), "score": str(score)})
        scores.append((level(len(p["image"])), score))
    total = sum(s for _, s in scores)
    return predictions, {"Accuracy": total / len(predictions), **_by_level(scores)}, rows


def score_open(predictions: List[dict], annotation: dict) -> Tuple[dict, List[dict]]:
    """ROUGE-L F of an open-ended set."""
    import numpy as np

    _attach(predictions, annotation, choices=False)
    scores, rows = [], []
    for p in predictions:
        s = _rouge_l(normalise(p["pred_response"]), normalise(p["gt_response"]))
        rows.append({"id": str(p["sample_id"]), "score": str(round(s, 3))})
        scores.append((level(len(p["image"])), s))
    return {"Rouge-L f": float(np.mean([s for _, s in scores])), **_by_level(scores)}, rows


def score_needle(predictions: List[dict], annotation: dict, words: bool) -> Tuple[dict, List[dict]]:
    """Needle accuracy: the reference among the answer's words (``words``) or inside the answer."""
    _attach(predictions, annotation, choices=False)
    scores, rows = [], []
    for p in predictions:
        ref, ans = normalise(p["gt_response"]), normalise(p["pred_response"])
        s = int(ref in (ans.split() if words else ans))
        p["result"] = s
        rows.append({"id": str(p["sample_id"]), "score": str(s)})
        scores.append((level(len(p["image"])), s))
    return {"Accuracy": sum(s for _, s in scores) / len(predictions), **_by_level(scores)}, rows


def anls(answer: str, references: List[str]) -> float:
    """The original's ANLS of one answer: lower-cased, normalised Levenshtein similarity, 0 below 0.5, best."""
    import Levenshtein

    if not answer or not references:
        return 0.0
    a = answer.lower()
    sims = []
    for ref in references:
        r = ref.lower()
        s = 1 - Levenshtein.distance(a, r) / max(len(a), len(r))
        sims.append(s if s >= 0.5 else 0.0)
    return max(sims)


def score_rouge_only(predictions: List[dict]) -> Tuple[dict, List[dict]]:
    """Rouge_OCR_VQA: ROUGE-L F against each sample's first reference."""
    import numpy as np

    scores, rows = [], []
    for p in predictions:
        s = _rouge_l(normalise(p["pred_response"]), normalise(p["gt_response"][0]))
        scores.append(s)
        rows.append({"id": str(p["sample_id"]), "score": str(round(s, 3))})
    return {"Rouge-L f": float(np.mean(scores))}, rows


def _dump(path: Path, obj, indent=None) -> None:
    from SequentialPrune.evaluation.safe_io import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=indent, default=float))


def main_metric(dataset: str, result: dict) -> Tuple[str, float]:
    """(name, value) of the metric a dataset's eval.json leads with."""
    for key in ("Accuracy", "Rouge-L f", "mean_anls"):
        if key in result:
            return key, float(result[key])
    raise KeyError(f"{dataset}: no metric in {sorted(result)}")


def evaluate_dataset(data_dir, dataset: str, result_dir, adv: bool = False) -> dict:
    """Score ``<result_dir>/<dataset>/pred.json`` and write its eval files; return eval.json's content."""
    from .data import annotation_path, load_annotation

    out_dir = Path(result_dir) / dataset
    pred_file = out_dir / "pred.json"
    model = Path(result_dir).name
    if not pred_file.is_file():
        raise ValueError(f"{model}--{dataset} No prediction file found ({pred_file})")
    preds = json.loads(pred_file.read_text(encoding="utf-8"))
    if not preds:
        raise ValueError(f"{pred_file} holds no predictions")
    if dataset == OCRVQA:
        result, rows = score_rouge_only(preds)
    elif dataset == DOCVQA:
        result, rows = {"mean_anls": sum(anls(p["pred_response"], p["gt_response"]) for p in preds) / len(preds)}, None
    else:
        annotation = load_annotation(annotation_path(data_dir, dataset, adv=adv))
        kind = annotation["meta_data"]["question_type"]
        if "NeedleInAHaystack" in dataset or "MMCoQA" in dataset:
            result, rows = score_needle(preds, annotation, words="NeedleInAHaystack" in dataset)
        elif kind == "open-ended":
            result, rows = score_open(preds, annotation)
        elif kind == "multi-choice":
            extracted, result, rows = score_multichoice(preds, annotation)
            _dump(out_dir / "pred_with_extracted.json", extracted, indent=4)
        else:
            raise ValueError(f"{dataset}: question_type {kind!r} is not scored (multi-choice, open-ended)")
    print(f"{model}:  {dataset}:  {result}")
    _dump(out_dir / "eval.json", result)
    if rows is not None:
        _dump(out_dir / "eval_score.json", rows, indent=4)
    return result


def evaluate_main(argv=None) -> int:
    """``eval/MileBench/evaluate.py``: the original's command line."""
    import argparse

    p = argparse.ArgumentParser(prog="evaluate.py", description="Score one MileBench dataset's pred.json")
    p.add_argument("--data-dir", type=str, required=True)
    p.add_argument("--dataset", type=str, required=True)
    p.add_argument("--result-dir", type=str, required=True)
    p.add_argument("--adv", action="store_true", help="Use adversarial data for evaluation.")
    a = p.parse_args(argv)
    try:
        evaluate_dataset(a.data_dir, a.dataset, a.result_dir.rstrip("/"), a.adv)
    except (ValueError, FileNotFoundError, AssertionError, KeyError) as e:  # KeyError: an id the annotation lacks
        print(f"evaluate.py: error: {type(e).__name__}: {e}")
        return 1
    print("Done eval\n\n")
    return 0
