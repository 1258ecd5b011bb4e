"""The image files the paper's models read: the original code's dump rule for a benchmark row, redone.

The original's vendored VLMEvalKit (LeeBumSeok/Tokenpruning @ 0898f4a,
``vlmeval/dataset/image_base.py:102-121`` ``dump_image`` and
``vlmeval/smp/vlm.py:101-113``) decoded each row's base64 payload with PIL,
converted RGBA and P images to RGB, and saved it with ``Image.save(path)``:

* one image: ``{index}.jpg``, so every payload (PNG included) was re-encoded
  as JPEG with PIL's defaults (quality 75, 4:2:0 chroma), whatever the row's
  ``image_path`` said; CMYK and YCbCr images saved as such;
* several images: the names in ``image_path``, saved by their extension;
* no ``image`` column (e.g. a TSV above 1 GB that VLMEvalKit localised): the
  files in ``image_path`` as they are.

A file that already exists and opens is served as it is, as the original did.
VLMEvalKit 0.0.20 writes ``{index}.png`` losslessly instead (and fails on CMYK),
so on document pages the model's input differs by up to several grey levels;
the paper protocol therefore writes these files into a folder of their own,
:data:`FOLDER` under the dataset's image folder.
"""
from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import List, Optional

from ..safe_io import replacing

RULE = "original-jpeg"  # the identity's name of this rule (``image_files``)
FOLDER = "seqprune-paper-jpeg"  # beside VLMEvalKit's own files, so the two rules never serve each other's


def missing_cell(v) -> bool:
    """An empty TSV cell (None, or the NaN pandas reads it as)."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def _read_ok(path: Path) -> bool:
    from PIL import Image

    if not path.is_file():
        return False
    try:
        with Image.open(path) as im:
            return im.size[0] > 0 and im.size[1] > 0
    except Exception:  # a file cut short, or not an image: written again
        return False


def write_original(payload: str, path: Path) -> None:
    """``payload`` (base64) decoded and saved to ``path`` as the original did (format from the extension)."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    if image.mode in ("RGBA", "P"):
        image = image.convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:  # never a half file under the served name
        image.save(tmp, format=Image.registered_extensions().get(path.suffix.lower()))


def _names(value) -> List[str]:
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        import ast
        return [str(x) for x in ast.literal_eval(value)]
    return [str(x) for x in value] if isinstance(value, (list, tuple)) else [str(value)]


def original_image_files(line, folder: Path) -> Optional[List[str]]:
    """The files the original fed the model for row ``line``, written into ``folder`` when missing.

    None for a row without an ``image`` payload: the original then read the files its ``image_path``
    names, as VLMEvalKit 0.0.20 does, so the harness's own rule serves them.
    """
    image = line["image"] if "image" in line else None
    if missing_cell(image):
        return None
    folder = Path(folder)
    if isinstance(image, list):
        if "image_path" not in line:
            raise ValueError("a row with several images needs an image_path column (as in the original)")
        pairs = list(zip(image, _names(line["image_path"])))
    else:
        pairs = [(image, f"{line['index']}.jpg")]
    out = []
    for payload, name in pairs:
        path = folder / name
        if not _read_ok(path):
            write_original(payload, path)
        out.append(str(path))
    return out
