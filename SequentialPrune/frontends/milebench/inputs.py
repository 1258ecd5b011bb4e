"""Model inputs of one MileBench sample: the original's LLaVA worker on the paper protocol, the checkpoint's chat
template on the hf protocol. Both build from a processor only (no weights), so ``--dump-inputs`` shows exactly
what the model would get.

Paper protocol (LLaVA-1.5; the original's ``workers/model_workers.py`` with LLaVA's ``mm_utils.py``): the prompt
of ``templates.llava_prompt``; ids by ``tokenizer_image_token`` (each ``<image>``-separated chunk tokenised on its
own with BOS, the first BOS kept; ``paper_llava.chunk_token_ids``) with the slow SentencePiece tokenizer where the
checkpoint ships ``tokenizer.model``; each image padded to a square of the mean colour, then CLIP-processed
(``process_images`` with ``image_aspect_ratio='pad'``); generation stops at the template's keyword.

hf protocol (every family): one user turn whose content is the context's text pieces and one image item per
``<ImageHere>``, through the processor's chat template and processor (its own image handling).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Dict, List

from SequentialPrune.evaluation.protocols.paper_llava import PaperInputs, chunk_token_ids, sentencepiece_file

from .data import Sample
from .prompts import PLACEHOLDER
from .templates import IMAGE_TAG, llava_prompt, separate_adjacent_images, template_for


def open_image(image):
    """An RGB PIL image from a path or a PIL image (OCR-VQA's come decoded)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    with Image.open(image) as im:
        return im.convert("RGB")


def image_token_id(processor) -> int:
    tok = processor.tokenizer
    tid = getattr(processor, "image_token_id", None)
    return int(tid) if tid is not None else int(tok.convert_tokens_to_ids(processor.image_token))


class SentencePieceText:
    """The original's slow LLaMA tokenizer on text without special tokens, for the prompt rules' round trip.

    transformers 4.37's ``LlamaTokenizer`` with ``legacy=False`` (as LLaVA-1.5's tokenizer_config sets it) encodes
    such text as SentencePiece does and decodes ids as SentencePiece does (checked against 4.37.2 by
    ``tests/eval/milebench/test_milebench_prompts.py``). transformers 5's SentencePiece backend decodes otherwise
    (byte-fallback pieces left as ``<0x..>``, edge spaces dropped), so it is not used.
    """

    def __init__(self, model_file):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))

    def __call__(self, text: str, add_special_tokens: bool = False):
        if add_special_tokens:
            raise ValueError("the prompt rules tokenise without special tokens")
        return SimpleNamespace(input_ids=self.sp.encode(text))

    def decode(self, ids) -> str:
        return self.sp.decode(list(ids))


class PaperLlavaInputs:
    """The original LLaVA worker's prompt, ids and pixels for a llava-hf checkpoint."""

    protocol = "paper"

    def __init__(self, processor, model_path: str, tokenizer_kind: str):
        self.processor = processor
        self.paper = PaperInputs.load(processor, model_path, tokenizer_kind)  # checks tokenizer.model's vocabulary
        self.image_id = self.paper.image_id
        # The text the prompt rules round-trip is the original's slow tokenizer's, as its ids are.
        self.text_tokenizer = processor.tokenizer
        if tokenizer_kind == "sentencepiece":
            self.text_tokenizer = SentencePieceText(sentencepiece_file(model_path))

    def prompt(self, sample: Sample, dataset: str) -> str:
        return llava_prompt(sample.context, dataset)

    def stop_ids(self, dataset: str) -> List[int]:
        """The keyword criterion's ids: the keyword's tokens without a leading BOS (one token, or refused)."""
        tok = self.processor.tokenizer
        word = template_for(dataset).stop
        ids = list(tok(word).input_ids)
        if len(ids) > 1 and ids[0] == tok.bos_token_id:
            ids = ids[1:]
        if len(ids) != 1:
            raise ValueError(f"the stop keyword {word!r} is {len(ids)} tokens in this tokenizer; use --protocol hf")
        return ids

    def __call__(self, sample: Sample, dataset: str) -> Dict:
        import torch

        prompt = self.prompt(sample, dataset)
        if prompt.count(IMAGE_TAG) != len(sample.images):
            raise ValueError(f"the prompt has {prompt.count(IMAGE_TAG)} images for {len(sample.images)} image files")
        out = {}
        counts = []
        if sample.images:
            pixels = self.paper.images(images=[open_image(i) for i in sample.images], return_tensors="pt")
            out["pixel_values"] = pixels["pixel_values"]
            counts = [self.processor.replace_image_token({"pixel_values": out["pixel_values"]}, i)
                      .count(self.processor.image_token) for i in range(len(sample.images))]
        ids = chunk_token_ids(prompt, self.paper.encode, self.processor.tokenizer.bos_token_id, self.image_id, counts)
        out["input_ids"] = torch.tensor([ids])
        out["attention_mask"] = torch.ones(1, len(ids), dtype=torch.long)
        return out


class ChatTemplateInputs:
    """The checkpoint's chat template with the sample's images in place (any family's processor)."""

    protocol = "hf"

    def __init__(self, processor, min_pixels=None, max_pixels=None):
        self.processor = processor
        self.text_tokenizer = processor.tokenizer
        self.image_id = image_token_id(processor)
        # --min-pixels/--max-pixels (Qwen families): the processor's size bounds, the other one kept
        self.image_kwargs = {}
        if min_pixels or max_pixels:
            size = dict(getattr(processor.image_processor, "size", None) or {})
            size.update({k: v for k, v in (("shortest_edge", min_pixels), ("longest_edge", max_pixels)) if v})
            self.image_kwargs = {"size": size}

    def prompt(self, sample: Sample, dataset: str) -> str:
        content = []
        for i, piece in enumerate(separate_adjacent_images(sample.context).split(PLACEHOLDER)):
            if i:
                content.append({"type": "image"})
            if piece:
                content.append({"type": "text", "text": piece})
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    def stop_ids(self, dataset: str) -> List[int]:
        return []  # the checkpoint's EOS (its generation_config)

    def __call__(self, sample: Sample, dataset: str) -> Dict:
        prompt = self.prompt(sample, dataset)
        images = [open_image(i) for i in sample.images]
        extra = self.image_kwargs if images else {}
        return dict(self.processor(images=images or None, text=prompt, return_tensors="pt", **extra))


def input_builder(processor, run):
    """The inputs of ``run``'s protocol (a :class:`~SequentialPrune.evaluation.setting.ModelRun`)."""
    if run.get("protocol") == "paper":
        return PaperLlavaInputs(processor, run.model_path, run.get("paper_tokenizer", "checkpoint"))
    return ChatTemplateInputs(processor, run.get("min_pixels"), run.get("max_pixels"))


def image_runs(ids: List[int], image_id: int) -> List[List[int]]:
    """[start, end) of each run of image tokens in ``ids``."""
    runs: List[List[int]] = []
    for pos, t in enumerate(ids):
        if t != image_id:
            continue
        if runs and runs[-1][1] == pos:
            runs[-1][1] = pos + 1
        else:
            runs.append([pos, pos + 1])
    return runs
