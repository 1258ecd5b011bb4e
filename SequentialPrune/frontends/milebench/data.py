"""MileBench's annotation files and the original research code's two extra sets, read into :class:`Sample` rows.

MileBench (``<data_dir>/<Dataset>/<Dataset>.json``): ``meta_data`` (``task_instruction`` list, ``question_type``)
and ``data`` (``sample_id``, ``task_instruction_id``, ``task_instance`` with ``context``, ``images_path``,
optional ``choice_list`` / ``combined_<N>_images``, ``response``, ``image_quantity_level``). Images are under
``<Dataset>/images/`` (``<Dataset>/combined_<N>_images/`` for ``--combine_image N``); ``<Dataset>-adv.json`` is the
adversarial variant. The original's ``generate.py`` ran the samples grouped by image count, groups in the order
their first sample appears; :func:`grouped` keeps that order (it is the order of ``pred.json``).

The extra sets (the original's ``utils.py``, ``MAX_NUM = 200``): ``ANLS_DocVQA`` reads DocVQA's ``imdb_val.npy``
rows ``[1:200]`` (row 0 of an imdb file is its header), ``Rouge_OCR_VQA`` the ``validation`` split of an OCR-VQA
``datasets`` folder, its first 200 images with every question of each.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

MAX_NUM = 200  # the original's cap on both extra sets
DOCVQA = "ANLS_DocVQA"
OCRVQA = "Rouge_OCR_VQA"
EXTRA_SETS = (DOCVQA, OCRVQA)


@dataclass
class Sample:
    """One question as the model gets it, before the model's template."""
    sample_id: object
    context: str                  # the prompt text, one ``<ImageHere>`` per image
    images: list                  # image file paths, or PIL images (OCR-VQA's come inside the dataset)
    response: object              # the reference answer (a string, or a list of answers)
    image_names: list = field(default_factory=list)  # what pred.json's ``image`` field holds


def annotation_path(data_dir, dataset: str, combine_image: Optional[int] = None, adv: bool = False) -> Path:
    """The annotation file ``generate.py`` (combined) or ``evaluate.py`` (``--adv``) reads for ``dataset``."""
    folder = Path(data_dir) / dataset
    if combine_image and combine_image != 1 and adv:
        raise ValueError("--adv and --combine_image together: MileBench ships no combined adversarial file")
    if combine_image and combine_image != 1:
        return folder / f"{dataset}_combined_{combine_image}.json"
    return folder / (f"{dataset}-adv.json" if adv else f"{dataset}.json")


def load_annotation(path: Path) -> dict:
    """The annotation JSON, checked for the keys the prompts and the scoring read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: download MileBench (see eval/MileBench/README.md) and give "
                                "--data_dir its folder")
    rec = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rec, dict) or "meta_data" not in rec or "data" not in rec:
        raise ValueError(f"{path} is not a MileBench annotation file (no meta_data/data)")
    ids = [d["sample_id"] for d in rec["data"]]
    if len(set(map(str, ids))) != len(ids):
        raise ValueError(f"{path}: several samples share a sample_id; pred.json is keyed by it")
    return rec


def grouped(data: List[dict]) -> Dict[int, List[dict]]:
    """Samples by their number of images, groups in the order of their first sample (the original's order)."""
    out: Dict[int, List[dict]] = {}
    for d in data:
        out.setdefault(len(d["task_instance"]["images_path"]), []).append(d)
    return out


def docvqa_samples(annotation, img_dir, max_num: Optional[int] = MAX_NUM) -> List[Sample]:
    """ANLS_DocVQA: ``<ImageHere>\\n`` + question over ``<img_dir>/<image_name>.png``; answers lower-cased and
    de-duplicated (first occurrence order; the original's ``set`` order varies between runs, ANLS does not)."""
    import numpy as np

    path = Path(annotation)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give --docvqa-ann the DocVQA imdb_val.npy (see README)")
    rows = np.load(path, allow_pickle=True)
    rows = rows[1:max_num] if max_num is not None else rows[1:]
    out = []
    for ann in rows:
        image = str(Path(img_dir) / (ann["image_name"] + ".png"))
        answers = list(dict.fromkeys(a.lower() for a in ann["answers"]))
        out.append(Sample(ann["question_id"], "<ImageHere>\n" + ann["question"], [image], answers, [image]))
    return out


def ocrvqa_samples(folder, max_num: Optional[int] = MAX_NUM) -> List[Sample]:
    """Rouge_OCR_VQA: every question of the first ``max_num`` validation images, numbered from 0 in that order;
    the reference is ``[answer]``; pred.json's ``image`` is ``["skip"]`` as in the original."""
    from datasets import load_dataset

    if not Path(folder).exists():
        raise FileNotFoundError(f"{folder} not found: give --ocrvqa-dir the OCR-VQA dataset folder (see README)")
    split = load_dataset(str(folder))["validation"]
    out = []
    for n, row in enumerate(split):
        if max_num is not None and n >= max_num:
            break
        for question, answer in zip(row["questions"], row["answers"]):
            out.append(Sample(len(out), "<ImageHere>\n" + question, [row["image"]], [answer], ["skip"]))
    return out
