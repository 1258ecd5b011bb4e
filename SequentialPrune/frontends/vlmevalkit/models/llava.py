"""llava-hf LLaVA-1.5 with VLMEvalKit's LLaVA prompts, under the paper's or the hf input protocol."""
from __future__ import annotations

from PIL import Image
from vlmeval.vlm.base import BaseModel
from vlmeval.vlm.llava.llava import LLaVA_Next

from SequentialPrune.evaluation.protocols.paper_llava import PaperInputs
from SequentialPrune.evaluation.setting import ModelRun

from .base import VLMEvalKitPrunedModel

# LLaVA-1.5's (Vicuna v1) system prompt for the chat template, which adds the space after it.
LLAVA_SYSTEM_PROMPT = ("A chat between a curious human and an artificial intelligence assistant. "
                       "The assistant gives helpful, detailed, and polite answers to the human's questions.")


class LlavaSeqPrune(VLMEvalKitPrunedModel, LLaVA_Next):
    """llava-hf LLaVA-1.5 (``LlavaForConditionalGeneration``) with VLMEvalKit's LLaVA prompts.

    MCQ prompts come from VLMEvalKit's LLaVA ``build_prompt`` (the same as the original's), the others from
    the datasets. The paper protocol then feeds the model what the original did (``protocols.paper_llava``);
    ``"hf"`` uses the checkpoint's chat template and processor.
    """

    INSTALL_REQ = False
    INTERLEAVE = True
    FAMILY = "llava"
    PROTOCOLS = ("paper", "hf")

    def __init__(self, run: ModelRun, system_prompt=LLAVA_SYSTEM_PROMPT, **kwargs):
        BaseModel.__init__(self)  # not LLaVA_Next.__init__: it loads LLaVA-NeXT classes onto CUDA
        self.protocol, self.system_prompt = run.get("protocol"), system_prompt
        self._load_pruned(run)
        self.paper = None
        if self.protocol == "paper":
            self.paper = PaperInputs.load(self.processor, run.model_path, run.get("paper_tokenizer", "checkpoint"))
            # Stop at </s> as the original's stopping criterion, and at the checkpoint's EOS as its generate did.
            eos = self.model.generation_config.eos_token_id
            eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
            self.generate_kwargs["eos_token_id"] = sorted(set(eos) | set(self.paper.stop_ids()))

    def _hf_inputs(self, message):
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
        return self.processor(images=images or None, text=prompt, return_tensors="pt")

    def model_inputs(self, message) -> dict:
        """The model inputs for a VLMEvalKit message under this protocol, on the model's device and dtype."""
        inputs = dict(self.paper(message) if self.paper else self._hf_inputs(message))
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def generate_inner(self, message, dataset=None):
        new = self._generate(self.model_inputs(message), dataset)
        if self.paper:  # the original: decode the new tokens without special tokens, strip, nothing else
            return self.processor.tokenizer.decode(new, skip_special_tokens=True).strip()
        answer = self._decode(new)
        return self.output_process(answer).replace("<unk>", "").strip()
