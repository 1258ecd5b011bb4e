"""Which image files a VLMEvalKit dataset hands our models, by input protocol.

VLMEvalKit's ``dataset.dump_image(line)`` writes a row's base64 images to files
and returns their paths; both the dataset's prompt builders and the model's (through
``set_dump_image``) call it. :func:`install` replaces it on the dataset instance:

* ``paper``: the original code's files (``evaluation.protocols.paper_images``:
  ``{index}.jpg`` re-encoded as JPEG, in a folder of their own);
* ``hf``: VLMEvalKit 0.0.20's own files, except that an image PNG cannot hold
  (CMYK, YCbCr, ...) is converted to RGB first instead of failing the row.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from SequentialPrune.evaluation.protocols import paper_images
from SequentialPrune.evaluation.safe_io import replacing

# What VLMEvalKit 0.0.20's decode_base64_to_image converts to RGB itself before saving.
_VLMEVAL_CONVERTS = ("RGBA", "P", "LA")


def _vlmeval_targets(line, img_root: str) -> List[Tuple[str, Path]]:
    """(payload, path) of each image VLMEvalKit 0.0.20's dump_image writes for ``line`` (its naming rules)."""
    from vlmeval.smp import toliststr

    image = line["image"] if "image" in line else None
    if paper_images.missing_cell(image):
        return []
    root = Path(img_root)
    if isinstance(image, list):
        names = toliststr(line["image_path"]) if "image_path" in line else \
            [f"{line['index']}_{i}.png" for i in range(len(image))]
        return [(p, root / n) for p, n in zip(image, names)]
    if isinstance(image, str) and "image_path" in line:
        return [(image, root / str(line["image_path"]))]
    return [(image, root / f"{line['index']}.png")]


def _rgb_where_needed(payload: str, path: Path) -> None:
    """Write ``payload`` to ``path`` as RGB when its mode cannot be saved in ``path``'s format; else leave it
    to VLMEvalKit."""
    from PIL import Image
    from vlmeval.smp import read_ok

    if read_ok(str(path)):
        return
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    if image.mode in _VLMEVAL_CONVERTS:
        return
    fmt = Image.registered_extensions().get(path.suffix.lower())
    try:
        image.save(io.BytesIO(), format=fmt)
    except (OSError, KeyError, ValueError):  # e.g. "cannot write mode CMYK as PNG"
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp:
            image.convert("RGB").save(tmp, format=fmt)


def dump_for(dataset, protocol: str, orig: Callable) -> Callable:
    """``dataset.dump_image`` under ``protocol`` (see the module), over VLMEvalKit's own ``orig``."""
    if protocol == "paper":
        folder = Path(dataset.img_root) / paper_images.FOLDER

        def dump_image(line):
            files: Optional[List[str]] = paper_images.original_image_files(line, folder)
            return files if files is not None else orig(line)
    else:
        def dump_image(line):
            for payload, path in _vlmeval_targets(line, dataset.img_root):
                _rgb_where_needed(payload, path)
            return orig(line)
    dump_image._seqprune_protocol, dump_image._seqprune_orig, dump_image._seqprune_dataset = protocol, orig, dataset
    return dump_image


def install(dataset, protocol: str) -> Callable:
    """Make ``dataset.dump_image`` serve ``protocol``'s files; return it. VLMEvalKit hands a dataset to each
    model just before that model's loop over it (``set_dump_image``), so the model running is the one served."""
    current = dataset.dump_image
    if getattr(current, "_seqprune_protocol", None) == protocol:
        return current
    orig = getattr(current, "_seqprune_orig", current)
    dataset.dump_image = dump_for(dataset, protocol, orig)
    return dataset.dump_image
