"""Local benchmark TSVs under names VLMEvalKit does not know (``--register-dataset NAME=KIND``).

VLMEvalKit guesses a type for an unknown ``$LMUData/NAME.tsv`` (MCQ if it has A/B
columns, otherwise a VQA set it cannot score) and has no Y/N guess. Adding the
name to the class of KIND, with no URL and no md5, makes it load the local file
offline with the right prompts and metric. Call this in every process.

VLMEvalKit reads ``$LMUData`` only if that directory exists, and otherwise
falls back on ``~/LMUData`` without a word: a mistyped path would evaluate
whatever TSV of the same name sits there. :func:`check_lmudata` makes an unset
or missing ``$LMUData`` an error instead.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Tuple

KIND_CLASSES = {"mcq": "ImageMCQDataset", "yn": "ImageYORNDataset", "vqa": "ImageVQADataset"}


def check_lmudata() -> Path:
    """The ``$LMUData`` directory; ValueError (with the fix) if it is unset or not a directory."""
    value = os.environ.get("LMUData")
    if not value:
        raise ValueError("$LMUData is not set, and VLMEvalKit would then silently read (and download into) "
                         "~/LMUData. Set it to your benchmark folder, e.g. export LMUData=~/LMUData")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ValueError(f"$LMUData={value} is not a directory, and VLMEvalKit would silently read ~/LMUData "
                         "instead. Fix the path (or create that folder)")
    return path


def lmudata_root() -> Path:
    from vlmeval.smp import LMUDataRoot
    return Path(LMUDataRoot())


def register_local_datasets(pairs: Iterable[Tuple[str, str]]) -> None:
    """Register each (name, kind); the TSV must exist in LMUData."""
    import vlmeval.dataset as ds

    for name, kind in pairs:
        tsv = lmudata_root() / f"{name}.tsv"
        if not tsv.is_file():
            raise FileNotFoundError(f"--register-dataset {name}={kind}: {tsv} does not exist "
                                    f"(LMUData={os.environ.get('LMUData', '~/LMUData')})")
        cls = getattr(ds, KIND_CLASSES[kind])
        cls.DATASET_URL[name] = ""
        cls.DATASET_MD5.pop(name, None)


def dataset_known(name: str) -> bool:
    """Whether VLMEvalKit can build ``name``: a supported name or a TSV in LMUData."""
    from vlmeval.dataset import DATASET_CLASSES
    from vlmeval.dataset.video_dataset_config import supported_video_datasets

    if name in supported_video_datasets or any(name in c.supported_datasets() for c in DATASET_CLASSES):
        return True
    return (lmudata_root() / f"{name}.tsv").is_file()


def registered_md5(name: str):
    """The md5 VLMEvalKit registers for dataset ``name`` (None if it registers none)."""
    registered = None
    try:
        from vlmeval.dataset import DATASET_CLASSES
        for cls in DATASET_CLASSES:
            registered = getattr(cls, "DATASET_MD5", {}).get(name) or registered
    except Exception:  # an unusual dataset class layout: no registered md5 then
        pass
    return registered


def dataset_fingerprint(name: str, tsv: Path) -> dict:
    """The fingerprint of ``$LMUData/<name>.tsv``, or of VLMEvalKit's registered md5 before it downloads."""
    from SequentialPrune.evaluation.run_folder.fingerprint import dataset_fingerprint as fingerprint

    return fingerprint(tsv, None if tsv.is_file() else registered_md5(name))


def duplicated_indices(tsv: Path, limit: int = 10) -> List[str]:
    """``index`` values that more than one row of ``tsv`` carries (at most ``limit`` of them). VLMEvalKit keys a
    row's prediction and its dumped image by its index, so such rows would be answered about another row's
    image and scored with one answer."""
    import pandas as pd

    with open(tsv, encoding="utf-8", errors="replace") as f:
        if "index" not in f.readline().rstrip("\n").split("\t"):
            return []
    index = pd.read_csv(tsv, sep="\t", usecols=["index"], dtype=str, keep_default_na=False)["index"]
    return list(dict.fromkeys(index[index.duplicated()]))[:limit]


def answer_check(tsv: Path, kind: str):
    """(error, warning) about ``tsv``'s answers for a dataset registered as ``kind``; None where all is well.

    VLMEvalKit scores against the ``answer`` column only after every row was inferred, and its MCQ scoring
    compares option letters as they are, so ``a``..``d`` score 0 without a word."""
    import pandas as pd

    with open(tsv, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\n").split("\t")
    if "answer" not in header:
        return (f"{tsv} has no answer column, which VLMEvalKit scores against after inferring every row; add it, "
                "or run --mode infer"), None
    if kind != "mcq":
        return None, None
    options = [c for c in header if len(c) == 1 and c.isupper()]
    answers = pd.read_csv(tsv, sep="\t", usecols=["answer"], dtype=str, keep_default_na=False)["answer"]
    odd = sorted({a for a in answers if a.strip() not in options})
    if odd:
        return None, (f"{tsv}: answers {odd[:5]} are not option letters ({', '.join(options)}); VLMEvalKit scores "
                      "them as wrong (option letters are upper case)")
    return None, None
