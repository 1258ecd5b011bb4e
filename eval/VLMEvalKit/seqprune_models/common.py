"""What every model class shares: loading, pruning, prefill timing and per-sample stats."""
from __future__ import annotations

import logging
import time
import warnings
from typing import Dict, Optional, Tuple

import torch

from SequentialPrune import PruneConfig, apply_pruning

from prefill_timer import PrefillTimer
from row_guard import RowGuard
from sample_stats import SampleTracker, StatsLog

log = logging.getLogger("seqprune")

DEFAULT_MAX_NEW_TOKENS = 2048  # VLMEvalKit's default for both wrappers


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    """The hf protocol's dtype: bf16 on GPU, fp32 on CPU (half-precision matmuls are slow there)."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


class PrunedGenerationMixin:
    """Loading, pruning, prefill timing and per-sample stats shared by the model classes."""

    MODEL_CLASSES: Dict[str, str] = {}  # config.model_type -> transformers class name

    def _load_pruned(self, model_path: str, prune: PruneConfig, attn_impl: str, stats_dir: str,
                     model_name: str, max_new_tokens: Optional[int], expect_sys_length: Optional[int],
                     expect_image_tokens: Optional[int], dtype: Optional[str] = None) -> None:
        import transformers
        from transformers import AutoConfig, AutoProcessor

        self.model_path, self.prune, self.model_name = model_path, prune, model_name
        self.device = default_device()
        # dtype: as resolved by protocol.resolve (run.py passes it); None = this device's default.
        self.dtype = getattr(torch, dtype, None) if dtype else default_dtype(self.device)
        if not isinstance(self.dtype, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}")
        model_type = AutoConfig.from_pretrained(model_path).model_type
        if model_type not in self.MODEL_CLASSES:
            raise ValueError(f"{type(self).__name__} runs {sorted(self.MODEL_CLASSES)} checkpoints; "
                             f"{model_path} is {model_type!r}")
        cls = getattr(transformers, self.MODEL_CLASSES[model_type])
        self.processor = AutoProcessor.from_pretrained(model_path)
        if getattr(self.processor, "chat_template", None) is None:
            raise ValueError(f"the processor of {model_path} has no chat template")
        # Left padding: the pruning score is read from the last position.
        self.processor.tokenizer.padding_side = "left"
        self.model = cls.from_pretrained(model_path, dtype=self.dtype, attn_implementation=attn_impl,
                                         device_map=self.device).eval()
        self.pruner = apply_pruning(self.model, prune)
        self.timer = PrefillTimer(self.model, self._on_prefill)  # after the pruner: sees its stats
        self.tracker = SampleTracker()
        self.stats_log = StatsLog(stats_dir)
        self.row_guard = RowGuard.beside(stats_dir)  # a bad row becomes a recorded failure, not a lost dataset
        self.expect = (expect_sys_length, expect_image_tokens)
        self._warned = set()
        self._first_prefill = None
        self.max_new_tokens = max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        self.generate_kwargs = dict(do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens)
        log.info("%s: %s (%s, %s, %s), pruning %s", model_name, model_path, cls.__name__, self.dtype,
                 attn_impl, prune.tag())

    # --- which sample is running (VLMEvalKit does not pass the index to generate)
    def set_dump_image(self, dump_image_func):
        super().set_dump_image(dump_image_func)
        self.tracker.watch(getattr(dump_image_func, "__self__", None), self.row_guard)

    def build_prompt(self, line, dataset=None):
        self.tracker.note(line, dataset)
        return self.row_guard.build_prompt(super().build_prompt, line, dataset)

    def generate(self, message, dataset=None):
        return self.row_guard.generate(super().generate, message, dataset)

    # --- generation with stats
    def _on_prefill(self, seconds: float, call: int) -> None:
        if call == 1:
            self._first_prefill = (seconds, self.pruner.stats.to_dict())

    def _check_lengths(self, input_ids: torch.Tensor) -> Tuple[int, int]:
        """(tokens before the first image token, image tokens) of row 0; warn once per mismatch with the flags."""
        visual = torch.isin(input_ids[0], self.pruner.visual_ids.to(input_ids.device))
        n_img = int(visual.sum())
        sys_len = int(visual.nonzero()[0, 0]) if n_img else -1
        for flag, want, got in (("--fast-v-sys-length", self.expect[0], sys_len),
                                ("--fast-v-image-token-length", self.expect[1], n_img)):
            if want is not None and want != got and (flag, got) not in self._warned:
                self._warned.add((flag, got))
                warnings.warn(f"{flag} {want} does not match the prompt: found {got} (image tokens are located from "
                              "the token ids, so the value found is used)")
        return sys_len, n_img

    def _generate(self, inputs, dataset) -> torch.Tensor:
        """Generate for one sample, log its stats, return the new token ids of row 0."""
        index = self.tracker.take(dataset)
        sys_len, n_img = self._check_lengths(inputs["input_ids"])
        kwargs = dict(self.generate_kwargs)
        if self.prune.cache_mode == "recompute" and self.prune.prunes:
            kwargs["use_cache"] = False
        self.timer.reset()
        self._first_prefill = None
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs)
        total = time.perf_counter() - t0
        new = out[0, inputs["input_ids"].shape[1]:]
        prefill_s, stats = self._first_prefill or (None, self.pruner.stats.to_dict())
        self.stats_log.write(dict(
            dataset=dataset, index=index, model=self.model_name, setting=self.prune.tag(),
            prefill_time_s=prefill_s, prefill_calls=len(self.timer.times), generate_time_s=total,
            new_tokens=int(new.numel()), tokens_before_image=sys_len, num_layers=self.pruner.num_layers,
            device=self.device, dtype=str(self.dtype).replace("torch.", ""), **stats))
        if n_img and stats.get("n_image_tokens") != n_img:
            raise RuntimeError(f"the pruner saw {stats.get('n_image_tokens')} image tokens, the prompt has {n_img}")
        return new

    def _decode(self, ids: torch.Tensor) -> str:
        return self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()


def set_qwen_prompt_state(model, min_pixels, max_pixels, system_prompt) -> None:
    """What VLMEvalKit's Qwen prompt mixins and ``_prepare_content`` read, set without their ``__init__``
    (which asks for nvidia-smi and flash-attn and loads the model)."""
    model.min_pixels, model.max_pixels, model.total_pixels = min_pixels, max_pixels, None
    model.fps, model.nframe, model.FRAME_FACTOR = 2, 128, 2
    model.system_prompt, model.verbose, model.post_process = system_prompt, False, False
    model.use_audio_in_video = model.use_vllm = model.use_lmdeploy = False
