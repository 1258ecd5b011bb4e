"""llava-hf LLaVA-OneVision with VLMEvalKit's ``LLaVA_OneVision_HF`` prompt convention."""
from __future__ import annotations

from PIL import Image
from vlmeval.vlm.base import BaseModel
from vlmeval.vlm.llava.llava import LLaVA_OneVision_HF

from SequentialPrune.evaluation.setting import ModelRun

from .base import VLMEvalKitPrunedModel


class LlavaOnevisionSeqPrune(VLMEvalKitPrunedModel, LLaVA_OneVision_HF):
    """LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``), images only: as VLMEvalKit's HF wrapper
    does, each image becomes ``<image>\\n`` in the text of one user turn, with the datasets' own prompts."""

    INSTALL_REQ = False
    INTERLEAVE = True
    VIDEO_LLM = False
    FAMILY = "onevision"
    PROTOCOLS = ("hf",)  # protocols.resolve refuses "paper" for models the paper did not run

    def __init__(self, run: ModelRun, **kwargs):
        BaseModel.__init__(self)  # not LLaVA_OneVision_HF.__init__: it loads fp16 onto CUDA
        self._load_pruned(run)

    def generate_inner(self, message, dataset=None):
        content, images = "", []
        for msg in message:
            if msg["type"] == "text":
                content += msg["value"]
            elif msg["type"] == "image":
                images.append(Image.open(msg["value"]).convert("RGB"))
                content += self.DEFAULT_IMAGE_TOKEN + "\n"
            else:
                raise ValueError(f"{type(self).__name__} takes images and text, not {msg['type']!r}")
        conversation = [{"role": "user", "content": [{"type": "text", "text": content}]}]
        prompt = self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        inputs = self.processor(images=images or None, text=prompt, return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return self._decode(self._generate(inputs, dataset))
