"""MileBench scoring against a re-derivation of the original's ``evaluate.py`` and ``score.py``
(LeeBumSeok/Tokenpruning @ 0898f4a, ``SequentialPrune/eval/MileBench_main/``), on hand-made pred.json files
that cover every option-matching stage, empty answers, punctuation and case, needle, ROUGE-L and ANLS.
The reference below is written in this file from the original's rules, not from our module."""
import csv
import json
import re
import subprocess
import sys

import Levenshtein
import numpy as np
import pytest
from eval_helpers import REPO
from rouge import Rouge

# ----------------------------------------------------------------------------- the original, re-derived
PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")


def ref_process(answer):
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    out = answer
    for p in PUNCT:
        if (p + " " in answer or " " + p in answer) or (re.search(COMMA_STRIP, answer) is not None):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = PERIOD_STRIP.sub("", out, re.UNICODE)  # sic: re.UNICODE lands in the count argument
    return out.strip("'").strip('"').strip().lower()


def ref_char(i):
    return chr(i + 65) if i < 26 else "A" + chr(i + 65 - 26) if i < 52 else "B" + chr(i + 65 - 52)


def ref_match_choice(text, option):
    def prep(s):
        s = ref_process(s)
        for c in ["\\", ".", "^", "$", "*", "+", "?", "{", "}", "[", "]", "|", "(", ")"]:
            if c in s:
                s = s.replace(c, "\\" + c)
        return s

    if text == "":
        return "C"
    try:
        res = re.search(rf"({'|'.join(prep(f'{k} {v}') for k, v in option.items())})", text, re.S)
        if res:
            return res.group(0)[0].upper()
        res = re.search(rf"({'|'.join(prep(v).replace(' ', '') for v in option.values())})", text.replace(" ", ""),
                        re.S)
        if res:
            for k, v in option.items():
                if res[0].strip() == prep(v).replace(" ", ""):
                    return k.upper()
        if len(text) in [1, 2] and text.upper() in option.keys():
            return text.upper()
    except Exception:
        return text
    return "".join(i.upper() for i in text if i.upper() in option)


def ref_level(n):
    return "Few" if n < 6 else "Many" if n > 31 else "Medium"


def ref_levels(pairs):
    cnt = {"Few": [], "Medium": [], "Many": []}
    for lv, s in pairs:
        cnt[lv].append(s)
    return ({k: np.mean(v) if len(v) != 0 else 0 for k, v in cnt.items()},
            {k: [sum(v), len(v)] for k, v in cnt.items()})


def ref_evaluate(preds, core, dataset):
    """evaluate.py main() for a MileBench set: eval.json's content."""
    by_id = {d["sample_id"]: d for d in preds}
    for s in core["data"]:
        p = by_id[int(s["sample_id"])]
        if "choice_list" in s["task_instance"]:
            p["choice_list"] = s["task_instance"]["choice_list"]
        p["image_quantity_level"] = s["image_quantity_level"]
        p["image"] = s["task_instance"]["images_path"]
    pairs = []
    if "NeedleInAHaystack" in dataset or "MMCoQA" in dataset:
        for p in preds:
            gt, pr = ref_process(p["gt_response"]), ref_process(p["pred_response"])
            score = (1 if gt in pr.split() else 0) if "NeedleInAHaystack" in dataset else (1 if gt in pr else 0)
            pairs.append((ref_level(len(p["image"])), score))
        acc, res = ref_levels(pairs)
        return {"Accuracy": sum(s for _, s in pairs) / len(preds), "image_quantity_level-Accuracy": acc,
                "image_quantity_level-Result": res}
    if core["meta_data"]["question_type"] == "open-ended":
        for p in preds:
            gt, pr = ref_process(p["gt_response"]), ref_process(p["pred_response"])
            score = 0 if pr == "" else Rouge().get_scores(pr, gt)[0]["rouge-l"]["f"]
            pairs.append((ref_level(len(p["image"])), score))
        acc, res = ref_levels(pairs)
        return {"Rouge-L f": np.mean([s for _, s in pairs]), "image_quantity_level-Accuracy": acc,
                "image_quantity_level-Result": res}
    for p in preds:
        p["gt_response"] = ref_process(p["gt_response"])
        p["pred_response"] = ref_process(p["pred_response"])
        p["choice_list"] = [ref_process(c) for c in p["choice_list"]]
        options = {ref_char(i): c for i, c in enumerate(p["choice_list"])}
        picked = ref_match_choice(p["pred_response"], options)
        score = 1 if picked == ref_char(p["choice_list"].index(p["gt_response"])) else 0
        pairs.append((ref_level(len(p["image"])), score))
    acc, res = ref_levels(pairs)
    return {"Accuracy": sum(s for _, s in pairs) / len(preds), "image_quantity_level-Accuracy": acc,
            "image_quantity_level-Result": res}


def ref_anls(prediction, annotations):
    if not prediction or not annotations:
        return 0.0
    prediction = prediction.lower()
    scores = []
    for a in annotations:
        a = a.lower()
        s = 1 - Levenshtein.distance(prediction, a) / max(len(prediction), len(a))
        scores.append(s if s >= 0.5 else 0.0)
    return max(scores)


# ----------------------------------------------------------------------------- hand-made sets
OPTIONS = ["the red circle", "blue square (small)", "green-triangle", "star"]
MCQ = [  # (answer, reference option index, images): every stage of match_choice
    ("A. the red circle", 0, 2), ("The answer is B. blue square (small).", 1, 2), ("greentriangle", 2, 7),
    ("It is the Green-Triangle!", 2, 7), ("D", 3, 40), ("d", 3, 40), ("", 2, 3), ("", 0, 3), ("(B)", 1, 3),
    ("B.", 1, 3), ("AC", 0, 3), ("none of them, maybe D?", 3, 8), ("X", 0, 2), ("Star.", 3, 2),
    ("\"A\"", 0, 2), ("1,000 A", 0, 2), ("the red circle\n\tor not", 0, 2)]
OPEN = [("The red circle, on the left.", "a red circle on the left", 2), ("", "blue", 2),
        ("BLUE square!!", "blue square", 10), ("no idea", "green triangle", 33)]
NEEDLE = [("The needle is apple.", "apple", 2), ("pineapple", "apple", 2), ("APPLE!", "apple", 7), ("", "x", 2)]


def write_set(root, result_dir, name, qtype, rows, options=None):
    data, preds = [], []
    for i, (answer, ref, n) in enumerate(rows):
        inst = {"context": "q", "images_path": [f"{k}.jpg" for k in range(n)]}
        gt = options[ref] if options else ref
        if options:
            inst["choice_list"] = list(options)
        data.append({"sample_id": i, "task_instruction_id": 0, "task_instance": inst, "response": gt,
                     "image_quantity_level": ref_level(n)})
        preds.append({"sample_id": i, "image": [], "question": "q", "gt_response": gt, "pred_response": answer})
    (root / name).mkdir(parents=True)
    core = {"meta_data": {"task_instruction": ["t"], "question_type": qtype}, "data": data}
    (root / name / f"{name}.json").write_text(json.dumps(core))
    (result_dir / name).mkdir(parents=True)
    (result_dir / name / "pred.json").write_text(json.dumps(preds))
    return preds, core


@pytest.fixture
def sets(tmp_path):
    data, res = tmp_path / "MileBench", tmp_path / "outputs" / "llava_seqprune_none"
    out = {
        "ObjectShuffle": write_set(data, res, "ObjectShuffle", "multi-choice", MCQ, OPTIONS),
        "GPR1200": write_set(data, res, "GPR1200", "multi-choice",
                             [("aa. opt 26", 26, 2), ("opt 40", 40, 2), ("BA", 52, 2), ("opt 3", 4, 2)],
                             [f"opt {i}" for i in range(60)]),
        "WikiVQA": write_set(data, res, "WikiVQA", "open-ended", OPEN),
        "TextNeedleInAHaystack": write_set(data, res, "TextNeedleInAHaystack", "open-ended", NEEDLE),
        "MMCoQA": write_set(data, res, "MMCoQA", "open-ended", NEEDLE),
    }
    docs = [{"sample_id": 10 + i, "gt_response": gt, "pred_response": p} for i, (p, gt) in enumerate(
        [("Yes", ["yes", "y"]), ("1990s", ["1990"]), ("abc", ["xyz"]), ("", ["a"]), ("Total: 5", ["total 5"])])]
    ocr_rows = [("Harry Potter", "harry potter and me"), ("", "x"), ("Cook-Book.", "cookbook")]
    ocr = [{"sample_id": i, "gt_response": [gt], "pred_response": p, "image": ["skip"]}
           for i, (p, gt) in enumerate(ocr_rows)]
    for name, preds in (("ANLS_DocVQA", docs), ("Rouge_OCR_VQA", ocr)):
        (res / name).mkdir(parents=True)
        (res / name / "pred.json").write_text(json.dumps(preds))
        out[name] = (preds, None)
    return data, res, out


def test_evaluate_equals_the_original_rules(sets):
    from SequentialPrune.frontends.milebench.scoring import evaluate_dataset, evaluate_main

    data, res, out = sets
    for ds, (preds, core) in out.items():
        ours = evaluate_dataset(data, ds, res)
        if ds == "ANLS_DocVQA":
            ref = {"mean_anls": sum(ref_anls(p["pred_response"], p["gt_response"]) for p in preds) / len(preds)}
        elif ds == "Rouge_OCR_VQA":
            ref = {"Rouge-L f": np.mean([0 if ref_process(p["pred_response"]) == "" else Rouge().get_scores(
                ref_process(p["pred_response"]), ref_process(p["gt_response"][0]))[0]["rouge-l"]["f"] for p in preds])}
        else:
            ref = ref_evaluate(json.loads(json.dumps(preds)), core, ds)
        assert json.loads(json.dumps(ours)) == json.loads(json.dumps(ref, default=float)), ds  # the same numbers
        assert json.loads((res / ds / "eval.json").read_text()) == json.loads(json.dumps(ours))
    # the sets exercise what they should: some right, some wrong, in every MCQ stage and level
    mcq = json.loads((res / "ObjectShuffle" / "eval.json").read_text())
    assert 0 < mcq["Accuracy"] < 1 and all(n for _, n in mcq["image_quantity_level-Result"].values())
    extracted = json.loads((res / "ObjectShuffle" / "pred_with_extracted.json").read_text())
    assert [e["extracted"] for e in extracted][:8] == ["A", "B", "C", "C", "D", "D", "C", "C"]
    assert 0 < json.loads((res / "ANLS_DocVQA" / "eval.json").read_text())["mean_anls"] < 1
    # the original's command line, unchanged
    assert evaluate_main(["--data-dir", str(data), "--dataset", "WikiVQA", "--result-dir", str(res)]) == 0
    assert evaluate_main(["--data-dir", str(data), "--dataset", "SlideVQA", "--result-dir", str(res)]) == 1


def test_adv_reads_the_adversarial_file(sets):
    from SequentialPrune.frontends.milebench.scoring import evaluate_dataset

    data, res, out = sets
    core = json.loads((data / "WikiVQA" / "WikiVQA.json").read_text())
    for d in core["data"]:
        d["image_quantity_level"] = "Many"
        d["task_instance"]["images_path"] = [f"{k}.jpg" for k in range(40)]
    (data / "WikiVQA" / "WikiVQA-adv.json").write_text(json.dumps(core))
    adv = evaluate_dataset(data, "WikiVQA", res, adv=True)
    assert adv["image_quantity_level-Result"]["Many"][1] == len(OPEN)


def test_score_tables_are_the_originals(sets):
    from SequentialPrune.frontends.milebench.scoring import evaluate_dataset

    data, res, out = sets
    for ds in out:
        evaluate_dataset(data, ds, res)
    cmd = [sys.executable, str(REPO / "eval" / "MileBench" / "score.py"), "--result-dir", str(res.parent),
           "--models", res.name]
    for _ in range(2):  # the original appends to an existing result.csv, without a header
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
        assert p.returncode == 0, p.stderr
    result = json.loads((res.parent / "result.json").read_text())[res.name]
    assert list(result) == ["Realistic Temporal", "Realistic Semantic", "Diagnostic"]
    assert result["Realistic Temporal"]["ObjectShuffle"]["Accuracy"] == json.loads(
        (res / "ObjectShuffle" / "eval.json").read_text())["Accuracy"]
    assert result["Realistic Semantic"]["SlideVQA"] == {} and "ANLS_DocVQA" not in json.dumps(result)
    rows = list(csv.reader(open(res.parent / "result.csv")))
    assert len(rows) == 3 and rows[1] == rows[2] and rows[0][0] == "Model"
    header = dict(zip(rows[0], rows[1]))
    acc = json.loads((res / "ObjectShuffle" / "eval.json").read_text())["Accuracy"]
    assert float(header["ObjectShuffle (Accuracy)"]) == round(acc * 100, 2)
    assert not any("image_quantity_level" in h for h in rows[0])
