"""Image cells VLMEvalKit cannot use, failing their rows alone instead of the whole dataset.

VLMEvalKit 0.0.20 reads an ``image`` cell of 64 characters or fewer as the index of another row whose image
it shares, and asserts, with no message, that such a row exists and has image data. A file path or a short
junk cell therefore stops the dataset while it loads ("combination failed: ,"). :func:`unusable_cells` finds
such cells; at launch they are named (:func:`tsv_problems`), and while a dataset loads :func:`install` writes a
marker over each one, so that ``rows.RowGuard`` fails just that row with the reason.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Sequence

from SequentialPrune.evaluation.rows import unusable_image

REFERENCE_MAX_LEN = 64  # VLMEvalKit's rule: a cell this short names another row


def _missing(cell) -> bool:
    return cell is None or (isinstance(cell, float) and math.isnan(cell))


def unusable_cells(index: Sequence, images: Sequence) -> Dict[str, str]:
    """{index: why its image cell cannot be used} by VLMEvalKit's rule; missing cells are VLMEvalKit's to skip."""
    cells = {str(i): str(c) for i, c in zip(index, images) if not _missing(c)}
    out = {}
    for i, cell in cells.items():
        if len(cell) > REFERENCE_MAX_LEN:
            continue
        target = cells.get(cell)
        if target is None or len(target) <= REFERENCE_MAX_LEN:
            out[i] = (f"the image cell {cell[:40]!r} is neither base64 image data nor the index of a row that "
                      "has it (a file path belongs in an image_path column)")
    return out


def tsv_problems(tsv: Path) -> Dict[str, str]:
    """:func:`unusable_cells` of a TSV file."""
    import pandas as pd

    with open(tsv, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\n").split("\t")
    if "index" not in header or "image" not in header:
        return {}
    data = pd.read_csv(tsv, sep="\t", usecols=["index", "image"], dtype=str)
    return unusable_cells(data["index"], data["image"])


def mark(data) -> int:
    """Write the marker over each unusable image cell of a dataset table; return how many."""
    if data is None or "image" not in getattr(data, "columns", ()) or "index" not in data.columns:
        return 0
    bad = unusable_cells(data["index"], data["image"])
    if bad:
        data["image"] = [unusable_image(bad[str(i)]) if str(i) in bad else c
                         for i, c in zip(data["index"], data["image"])]
    return len(bad)


def install() -> None:
    """Mark unusable cells in every image dataset as it loads, before VLMEvalKit's own reading of the cells.

    Loading is overridden by many dataset classes, but all of them come through ``ImageBaseDataset.__init__``,
    so that is where the (subclass's own) ``load_data`` is wrapped, for the one instance being built."""
    from vlmeval.dataset.image_base import ImageBaseDataset

    init = ImageBaseDataset.__init__
    if getattr(init, "_seqprune_marks_cells", False):
        return

    def __init__(self, *args, **kwargs):
        load = self.load_data

        def load_data(*a, **k):
            data = load(*a, **k)
            mark(data)
            return data

        self.load_data = load_data
        try:
            init(self, *args, **kwargs)
        finally:
            del self.load_data

    __init__._seqprune_marks_cells = True
    ImageBaseDataset.__init__ = __init__
