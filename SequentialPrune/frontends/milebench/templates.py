"""The LLaVA conversation templates the original's MileBench worker wraps each question in.

The worker (``workers/model_workers.py``) uses ``llava_llama_2`` for every set but ``Rouge_OCR_VQA``, which gets
``llava_v1`` (the templates are LLaVA's ``llava/conversation.py``). One user turn and an empty assistant turn:

* ``llava_llama_2`` (separator style LLAMA_2, ``sep="<s>"``, ``sep2="</s>"``): ``"[INST] <<SYS>>\\n" + system +
  "\\n<</SYS>>\\n\\n" + question + " [/INST]"`` (the leading ``<s>`` is stripped by ``lstrip``); it stops at ``sep``;
* ``llava_v1`` (style TWO, ``sep=" "``, ``sep2="</s>"``): ``system + " USER: " + question + " ASSISTANT:"``; it
  stops at ``sep2``.

Before that the worker turns CLEVR-Change's two adjacent images ``<ImageHere><ImageHere>`` into
``<ImageHere>\\n<ImageHere>\\n`` and each ``<ImageHere>`` into ``<image>``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

from .data import OCRVQA
from .prompts import PLACEHOLDER

LLAMA_2_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual content "
                  "that the user provides, and assist the user with a variety of tasks using natural language.")
V1_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
             "The assistant gives helpful, detailed, and polite answers to the human's questions.")
IMAGE_TAG = "<image>"


@dataclass(frozen=True)
class Template:
    name: str
    render: Callable[[str], str]   # the user's message -> the prompt
    stop: str                      # the keyword of the stopping criterion


TEMPLATES: Dict[str, Template] = {
    "llava_llama_2": Template("llava_llama_2",
                              lambda m: f"[INST] <<SYS>>\n{LLAMA_2_SYSTEM}\n<</SYS>>\n\n{m} [/INST]", "<s>"),
    "llava_v1": Template("llava_v1", lambda m: f"{V1_SYSTEM} USER: {m} ASSISTANT:", "</s>"),
}
# dataset -> template, where it is not the default
DATASET_TEMPLATES = {OCRVQA: "llava_v1"}
DEFAULT_TEMPLATE = "llava_llama_2"


def template_for(dataset: str) -> Template:
    return TEMPLATES[DATASET_TEMPLATES.get(dataset, DEFAULT_TEMPLATE)]


def separate_adjacent_images(context: str) -> str:
    """CLEVR-Change's ``<ImageHere><ImageHere>`` with a newline after each image (the worker's special case)."""
    return context.replace(PLACEHOLDER * 2, f"{PLACEHOLDER}\n{PLACEHOLDER}\n")


def llava_prompt(context: str, dataset: str) -> str:
    """The full prompt string the original's LLaVA worker tokenised for this context."""
    message = separate_adjacent_images(context).replace(PLACEHOLDER, IMAGE_TAG)
    return template_for(dataset).render(message)
