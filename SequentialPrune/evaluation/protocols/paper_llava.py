"""The original research code's LLaVA-1.5 inputs, rebuilt for llava-hf checkpoints.

What the original fed LLaVA (its ``vlmeval/vlm/llava/llava.py``, ``LLaVA.generate_inner``,
and its LLaVA fork's ``llava/mm_utils.py``):

* each image pasted centred on a square of the CLIP mean colour, then resized
  (``expand2square`` + ``process_images`` with ``image_aspect_ratio='pad'``), with the
  PIL-based CLIP processor of transformers 4.31;
* the prompt ``system + 'USER: ' + content + ' ASSISTANT: '``, every image item of the
  message ``' <image> '`` in place and text items joined with nothing;
* token ids built chunk by chunk around ``<image>`` (``tokenizer_image_token``) with the
  slow, SentencePiece Llama tokenizer (``use_fast=False``, ``llava/model/builder.py:160``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

SYSTEM_PROMPT = ("A chat between a curious human and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the human's questions. ")
IMAGE_TAG = "<image>"
STOP_STRING = "</s>"  # KeywordsStoppingCriteria(['</s>'])
# Settings of the checkpoint's image processor that the padding processor keeps.
_IMAGE_KEYS = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
               "do_normalize", "image_mean", "image_std", "do_convert_rgb")

Encoder = Callable[[str], List[int]]  # text -> ids, with BOS as the tokenizer adds it


def prompt_and_images(message) -> Tuple[str, List[str]]:
    """The original's prompt string for a VLMEvalKit message, and its image paths in order."""
    content, images = "", []
    for item in message:
        if item["type"] == "text":
            content += item["value"]
        elif item["type"] == "image":
            content += f" {IMAGE_TAG} "
            images.append(item["value"])
        else:
            raise ValueError(f"the paper protocol's LLaVA prompt has no place for a {item['type']!r} item")
    return SYSTEM_PROMPT + "USER: " + content + " ASSISTANT: ", images


def chunk_token_ids(prompt: str, encode: Encoder, bos_id: int, image_id: int,
                    image_tokens: Sequence[int]) -> List[int]:
    """``tokenizer_image_token``: tokenise each ``<image>``-separated chunk on its own (an empty chunk is
    ``[bos]``), keep the BOS of the first chunk only, and put image ``i``'s ``image_tokens[i]`` ids where
    the original put its one placeholder (which its model expanded to the image's embeddings)."""
    chunks = prompt.split(IMAGE_TAG)
    if len(chunks) - 1 != len(image_tokens):
        raise ValueError(f"the prompt has {len(chunks) - 1} {IMAGE_TAG} tags for {len(image_tokens)} images "
                         f"(a question containing {IMAGE_TAG!r}?)")
    pieces = [encode(c) if c else [bos_id] for c in chunks]
    skip = 1 if pieces[0][:1] == [bos_id] else 0  # the original slices every chunk alike once chunk 0 has BOS
    ids = list(pieces[0][:skip])
    for i, piece in enumerate(pieces):
        if i:
            ids += [image_id] * image_tokens[i - 1]
        ids += piece[skip:]
    return ids


def padding_image_processor(image_processor):
    """The checkpoint's image processor, padding to a square of the mean colour before resizing.

    ``LlavaImageProcessorPil(do_pad=True)`` pads with ``tuple(int(x*255) for x in image_mean)`` and resizes
    with PIL, as the original did; the torchvision backend resizes up to 2/255 differently.
    """
    from transformers import LlavaImageProcessorPil

    d = image_processor.to_dict()
    return LlavaImageProcessorPil(do_pad=True, **{k: d[k] for k in _IMAGE_KEYS if k in d})


def sentencepiece_file(model_path: str) -> Optional[str]:
    """The checkpoint's SentencePiece model (``tokenizer.model``), or None if it ships none."""
    from transformers.utils import cached_file

    try:
        return cached_file(model_path, "tokenizer.model", _raise_exceptions_for_missing_entries=False)
    except OSError as e:  # offline and not cached, unreachable hub, ...
        raise ValueError(f"cannot look for tokenizer.model in {model_path}: {e}") from None


def metaspace_tokenizer(model_path: str) -> bool:
    """Whether the checkpoint's fast tokenizer is a SentencePiece-style one (it marks word starts with '▁'),
    whose ids differ from the slow tokenizer's after an image placeholder."""
    from transformers.utils import cached_file

    try:
        path = cached_file(model_path, "tokenizer.json", _raise_exceptions_for_missing_entries=False)
    except OSError:
        return False
    text = Path(path).read_text(encoding="utf-8", errors="replace") if path else ""
    return "\u2581" in text or "\\u2581" in text  # the character, or its JSON escape


def sentencepiece_encoder(path: str, tokenizer) -> Encoder:
    """The slow Llama tokenizer of the original for text without special tokens: BOS + SentencePiece ids.

    transformers 5 has only the fast Llama tokenizer, which drops SentencePiece's extra ``▁`` before a
    chunk that starts with a space (the text after ``<image>``), so the ids would differ there.
    """
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path))
    probe = "USER: What is 12?"
    pieces = sp.encode(probe, out_type=str)
    if tokenizer.convert_ids_to_tokens(sp.encode(probe)) != pieces:
        raise ValueError(f"the SentencePiece model {path} does not match the checkpoint's tokenizer vocabulary")
    bos = tokenizer.bos_token_id
    return lambda text: [bos] + sp.encode(text)


class PaperInputs:
    """Builds the original's model inputs for VLMEvalKit messages from a llava-hf processor."""

    def __init__(self, processor, encode: Encoder, tokenizer_kind: str):
        tok = processor.tokenizer
        if tok.bos_token_id is None:
            raise ValueError("the paper protocol's token ids start with BOS, and this tokenizer has none; "
                             "use --protocol hf")
        self.processor, self.encode, self.tokenizer_kind = processor, encode, tokenizer_kind
        self.images = padding_image_processor(processor.image_processor)
        self.image_id = tok.convert_tokens_to_ids(processor.image_token)

    @classmethod
    def load(cls, processor, model_path: str, tokenizer_kind: str) -> "PaperInputs":
        """``tokenizer_kind``: ``sentencepiece`` (the checkpoint's tokenizer.model, as the original) or
        ``checkpoint`` (its own tokenizer, for checkpoints without one)."""
        tok = processor.tokenizer
        if tokenizer_kind == "sentencepiece":
            path = sentencepiece_file(model_path)
            if path is None:
                raise ValueError(f"{model_path} has no tokenizer.model for the slow tokenizer")
            return cls(processor, sentencepiece_encoder(path, tok), tokenizer_kind)
        if tokenizer_kind != "checkpoint":
            raise ValueError(f"unknown tokenizer kind {tokenizer_kind!r}")
        return cls(processor, lambda text: tok(text).input_ids, tokenizer_kind)

    def stop_ids(self) -> List[int]:
        """Token ids that end generation at the stop string (one token, ``</s>`` = EOS for Llama)."""
        ids = self.processor.tokenizer.encode(STOP_STRING, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"{STOP_STRING} is not one token in this tokenizer; use --protocol hf")
        return ids

    def __call__(self, message) -> dict:
        """input_ids, attention_mask (batch of one) and pixel_values (None without images)."""
        import torch
        from PIL import Image

        prompt, paths = prompt_and_images(message)
        pixel_values, counts = None, []
        if paths:
            images = [Image.open(p).convert("RGB") for p in paths]
            pixel_values = self.images(images=images, return_tensors="pt")["pixel_values"]
            # The processor's own rule for the tokens one image becomes (patches, CLS, select strategy).
            counts = [self.processor.replace_image_token({"pixel_values": pixel_values}, i)
                      .count(self.processor.image_token) for i in range(len(images))]
        ids = chunk_token_ids(prompt, self.encode, self.processor.tokenizer.bos_token_id, self.image_id, counts)
        out = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
        if pixel_values is not None:
            out["pixel_values"] = pixel_values
        return out
