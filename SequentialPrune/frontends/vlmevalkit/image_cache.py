"""VLMEvalKit's dumped images are tied to the TSV they came from.

VLMEvalKit writes each row's base64 image once to ``$LMUData/images/<dataset>/``
(the paper protocol's files go to a subfolder, ``image_files.py``) and afterwards
serves any readable file at that path. A TSV regenerated
under the same name would be evaluated on the old images. A stamp file in
that folder, ``.seqprune_tsv_md5.json`` (``{dataset: md5 of its TSV}``), records
which TSV the images came from; when the TSV differs, or the folder has images
but no record, the images are deleted (with a note) and VLMEvalKit extracts
them again from the current TSV.

Folders whose images are *not* extracted from the TSV are never touched: a TSV
without an ``image`` column (images shipped as files), or a TSV above 1 GB
(VLMEvalKit then serves images from a ``_local.tsv`` copy it made once).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from SequentialPrune.evaluation.safe_io import read_json, write_text_atomic

STAMP = ".seqprune_tsv_md5.json"
LOCALIZED_BYTES = 2 ** 30  # VLMEvalKit's prepare_tsv switches to a _local.tsv above 1 GB


def image_folder(lmudata: Path, dataset: str) -> Path:
    from vlmeval.dataset.image_base import img_root_map
    return Path(lmudata) / "images" / img_root_map(dataset)


def _has_image_column(tsv: Path) -> bool:
    with open(tsv, encoding="utf-8", errors="replace") as f:
        return "image" in f.readline().rstrip("\n").split("\t")


def sync(lmudata: Path, dataset: str, tsv: Path, md5: Optional[str]) -> Optional[str]:
    """Make ``dataset``'s image folder match ``tsv`` (md5 ``md5``); return a note if something was done."""
    if md5 is None or not tsv.is_file() or not _has_image_column(tsv):
        return None
    folder = image_folder(lmudata, dataset)
    stamp = read_json(folder / STAMP) or {}
    if stamp.get(dataset) == md5:
        return None
    entries = [p for p in folder.iterdir() if p.name != STAMP] if folder.is_dir() else []
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != STAMP] if entries else []
    note = None
    if entries:
        if tsv.stat().st_size > LOCALIZED_BYTES:
            return (f"{folder} may hold images of another version of {tsv.name} (recorded md5 "
                    f"{stamp.get(dataset)}, now {md5}); it is not cleared because VLMEvalKit localizes TSVs above "
                    f"1 GB. If the TSV changed, delete {folder} and {tsv.with_name(tsv.stem + '_local.tsv')}")
        why = (f"were extracted from another version of {tsv.name} (md5 {stamp[dataset]}, now {md5})"
               if dataset in stamp else f"have no record of the TSV they came from (now md5 {md5})")
        for p in entries:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        note = f"{folder}: {len(files)} cached image file(s) {why}; deleted, VLMEvalKit extracts them again"
        stamp = {}  # the folder is empty now: no other dataset's images are in it any more
    folder.mkdir(parents=True, exist_ok=True)
    stamp[dataset] = md5
    write_text_atomic(folder / STAMP, json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    return note
