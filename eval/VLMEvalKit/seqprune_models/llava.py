"""llava-hf LLaVA-1.5 with VLMEvalKit's LLaVA prompts."""
from __future__ import annotations

from PIL import Image
from vlmeval.vlm.base import BaseModel
from vlmeval.vlm.llava.llava import LLaVA_Next

from SequentialPrune import PruneConfig

from sample_stats import STATS_DIR

from .common import PrunedGenerationMixin

# LLaVA-1.5's (Vicuna v1) system prompt, which VLMEvalKit's LLaVA-1.5 wrapper also puts first.
LLAVA_SYSTEM_PROMPT = ("A chat between a curious human and an artificial intelligence assistant. "
                       "The assistant gives helpful, detailed, and polite answers to the human's questions.")


class LlavaSeqPrune(PrunedGenerationMixin, LLaVA_Next):
    """llava-hf LLaVA-1.5 (``LlavaForConditionalGeneration``) with VLMEvalKit's LLaVA prompts."""

    INSTALL_REQ = False
    INTERLEAVE = True
    MODEL_CLASSES = {"llava": "LlavaForConditionalGeneration"}

    def __init__(self, model_path="llava-hf/llava-1.5-7b-hf", *, prune: PruneConfig, attn_impl="sdpa",
                 stats_dir=STATS_DIR, model_name="llava_seqprune", max_new_tokens=None,
                 expect_sys_length=None, expect_image_tokens=None, system_prompt=LLAVA_SYSTEM_PROMPT, **kwargs):
        BaseModel.__init__(self)  # not LLaVA_Next.__init__: it loads LLaVA-NeXT classes onto CUDA
        self.system_prompt = system_prompt
        self._load_pruned(model_path, prune, attn_impl, stats_dir, model_name, max_new_tokens,
                          expect_sys_length, expect_image_tokens)

    def generate_inner(self, message, dataset=None):
        content, images = [], []
        for msg in message:
            if msg["type"] == "text":
                content.append({"type": "text", "text": msg["value"]})
            else:
                content.append({"type": "image"})
                images.append(Image.open(msg["value"]).convert("RGB"))
        conversation = [{"role": "user", "content": content}]
        if self.system_prompt:
            conversation.insert(0, {"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        prompt = self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        # Keywords: transformers 5 takes images first, so positional (prompt, images) breaks.
        inputs = self.processor(images=images or None, text=prompt, return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        answer = self._decode(self._generate(inputs, dataset))
        return self.output_process(answer).replace("<unk>", "").strip()
