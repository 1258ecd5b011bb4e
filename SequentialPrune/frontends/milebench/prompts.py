"""The prompt text of one MileBench sample, as the original's ``MileBenchDataset.__getitem__`` built it.

Rules (the original's ``utils.py``):

* the question is the sample's ``context``, plus for multiple choice ``"\\nChoice list: \\n"``, one
  ``"A. option"`` line per option (no letters for GPR1200, whose options outnumber the alphabet) and
  ``"\\nYour answer is: "``;
* ``{image#i}`` / ``{table#i}`` become ``<ImageHere>``, or ``<Image i> `` with combined images;
* the text is cut from the left to ``max_context_len`` tokens, the task instruction counted first and each
  image as ``n_tokens_per_image``: walking the pieces between images from the end, a piece is kept whole while it
  fits (the last one, if nothing fits, by its last tokens), then the image before it while that fits;
* every kept piece is tokenised and decoded back (so the text is the tokenizer's round trip, truncated or not),
  the pieces joined by ``<ImageHere>``, one in front when the kept part starts with an image;
* then ``instruction + "\\n" + text``; with combined images ``"<ImageHere>\\n" + instruction + "\\n" + text`` and the
  one combined image.

The tokenizer is the model's (``tokenizer(text, add_special_tokens=False).input_ids`` and ``decode``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from .data import Sample

PLACEHOLDER = "<ImageHere>"
NO_LETTERS = ("GPR1200",)  # datasets whose options are listed without letters


@dataclass(frozen=True)
class Budget:
    """The original's config values (``configs/model_configs.yaml``)."""
    max_context_len: int = 4096
    n_tokens_per_image: int = 576


def question_text(instance: dict, dataset: str) -> str:
    """The sample's context with its choice list appended (multiple choice)."""
    text = instance["context"]
    if "choice_list" in instance:
        plain = dataset in NO_LETTERS
        lines = [("" if plain else f"{chr(ord('A') + i)}. ") + f"{c}" for i, c in enumerate(instance["choice_list"])]
        text += "\nChoice list: \n" + "\n".join(lines) + "\nYour answer is: "
    return text


def place_images(text: str, n_images: int, combined: bool) -> str:
    """``{image#i}``/``{table#i}`` (i = 1..n) replaced by the image placeholder or, combined, ``<Image i> ``."""
    for i in range(1, n_images + 1):
        mark = f"<Image {i}> " if combined else PLACEHOLDER
        text = text.replace(f"{{image#{i}}}", mark).replace(f"{{table#{i}}}", mark)
    return text


def image_files(instance: dict, dataset_dir: Path, combine_image: Optional[int]) -> List[str]:
    """The sample's image paths: ``images/`` or, combined, ``combined_<N>_images/``."""
    if combine_image:
        key = f"combined_{combine_image}_images"
        return [str(Path(dataset_dir) / key / p) for p in instance[key]]
    return [str(Path(dataset_dir) / "images" / p) for p in instance["images_path"]]


def _encode(tokenizer, text: str) -> List[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def truncate_left(instruction: str, text: str, images: List[str], tokenizer, budget: Budget,
                  combined: bool) -> Tuple[str, List[str]]:
    """(text, images kept) of ``text`` cut from the left to fit the budget (see the module's rules)."""
    room = budget.max_context_len - len(_encode(tokenizer, instruction))
    pending = list(images)
    kept_images: List[str] = []
    chunks: List[List[int]] = []  # in reading order
    used, leads_with_image = 0, False
    for piece in reversed(text.split(PLACEHOLDER)):
        ids = _encode(tokenizer, piece)
        if used + len(ids) > room:
            if not chunks:  # nothing kept yet: the tail of this piece
                chunks.insert(0, ids[-room:])
            break
        chunks.insert(0, ids)
        used += len(ids)
        leads_with_image = False
        if combined:
            continue
        if used + budget.n_tokens_per_image > room:
            break
        if pending:
            kept_images.insert(0, pending.pop())
            used += budget.n_tokens_per_image
            leads_with_image = True
    decoded = [tokenizer.decode(c) for c in chunks]
    out = PLACEHOLDER.join(decoded)
    if leads_with_image:
        out = PLACEHOLDER + out
    if combined:
        if len(pending) != 1:
            raise ValueError(f"a combined sample has one image, this one {len(pending)}")
        return PLACEHOLDER + "\n" + instruction + "\n" + out, pending
    return instruction + "\n" + out, kept_images


def milebench_sample(ann: dict, instructions: List[str], dataset_dir, dataset: str, tokenizer, budget: Budget,
                     combine_image: Optional[int] = None) -> Sample:
    """The prompt text and images of annotation ``ann`` (one entry of the file's ``data``)."""
    instance = ann["task_instance"]
    instruction = instructions[ann["task_instruction_id"]]
    combined = bool(combine_image)
    text = place_images(question_text(instance, dataset), len(instance["images_path"]), combined)
    files = image_files(instance, Path(dataset_dir), combine_image)
    context, images = truncate_left(instruction, text, files, tokenizer, budget, combined)
    return Sample(ann["sample_id"], context, images, str(ann["response"]), images)
