"""A request's model inputs: lmms-eval's context and visuals in the checkpoint's chat template.

lmms-eval hands a simple model the prompt text (``doc_to_text``) and the
document's visuals (``doc_to_visual``). As lmms-eval's own HF wrappers do, the
images go first in the user turn and any ``<image>`` placeholder is dropped from
the text; the checkpoint's processor and chat template do the rest. Families
whose images are sized by min/max pixels get those bounds through
``qwen_vl_utils`` (per family in :data:`IMAGE_PREP`).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

from PIL import Image

from SequentialPrune.evaluation.protocols.paper_llava import SYSTEM_PROMPT as LLAVA_SYSTEM_PROMPT

IMAGE_PLACEHOLDER = "<image>"
# family -> the system prompt it was tuned with, used unless model_args system_prompt says otherwise (LLaVA-1.5's
# Vicuna v1 prompt, as the VLMEvalKit front end; the chat template adds the space after it)
SYSTEM_PROMPTS: Dict[str, str] = {"llava": LLAVA_SYSTEM_PROMPT.strip()}


def _qwen_images(images: List[Image.Image], run, patch: int) -> List[Image.Image]:
    lo, hi = run.get("min_pixels"), run.get("max_pixels")
    if lo is None and hi is None:
        return images  # the processor's own bounds
    from qwen_vl_utils import fetch_image

    bounds = {k: v for k, v in (("min_pixels", lo), ("max_pixels", hi)) if v is not None}
    return [fetch_image({"image": im, **bounds}, image_patch_size=patch) for im in images]


# family -> how its images are prepared before the processor (identity when absent)
IMAGE_PREP: Dict[str, Callable] = {
    "qwen": lambda images, run: _qwen_images(images, run, 14),
    "qwen3": lambda images, run: _qwen_images(images, run, 16),
}


def images_of(visuals) -> List[Image.Image]:
    """The PIL images of a document's visuals (nested lists flattened); ValueError for video or audio."""
    out, todo = [], [visuals]
    while todo:
        v = todo.pop(0)
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            todo[:0] = list(v)
        elif isinstance(v, Image.Image):
            out.append(v.convert("RGB"))
        else:
            raise ValueError(f"visual of type {type(v).__name__} ({str(v)[:60]!r}): this front end runs image "
                             "tasks (PIL images from doc_to_visual)")
    return out


def build_inputs(processor, run, family: str, context: str, visuals, system_prompt: Optional[str] = None) -> dict:
    """The processor's output (batch of one) for one request (``system_prompt`` "" for none)."""
    images = IMAGE_PREP.get(family, lambda ims, _r: ims)(images_of(visuals), run)
    text = context.replace(IMAGE_PLACEHOLDER, "").strip() if images else context
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
    conversation = [{"role": "user", "content": content}]
    if system_prompt:
        conversation.insert(0, {"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    # keywords: transformers 5 takes images first, so positional (prompt, images) breaks
    return dict(processor(images=images or None, text=[prompt], return_tensors="pt"))
