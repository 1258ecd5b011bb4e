"""A harness model class's shared part: loading a checkpoint with pruning, and generating with prefill timing
and per-sample stats.

:class:`PrunedModel` is a mixin: a front end's model class (VLMEvalKit's, say)
calls :meth:`PrunedModel._load_pruned` with its :class:`~.setting.ModelRun` and
:meth:`PrunedModel._generate` with the processed inputs of one sample (or
:meth:`PrunedModel._generate_rows` with several, of any image counts, in one
call). It knows no harness; the front end tells it which row runs (``self.rows``).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import time
import warnings
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from SequentialPrune import apply_pruning
from SequentialPrune.adapters import model_class

from .batch_inputs import join_rows
from .prefill_timer import PrefillTimer
from .protocols import GREEDY, default_device, default_dtype
from .rows import RowGuard
from .run_folder.identity import record_generation
from .sample_stats import StatsLog
from .setting import ModelRun

log = logging.getLogger("seqprune")

DEFAULT_MAX_NEW_TOKENS = 2048  # VLMEvalKit's default for both wrappers
# Recorded with their values even when they are transformers' defaults: what a reader checks first.
DECODING_KEYS = ("do_sample", "num_beams", "max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty",
                 "eos_token_id")


class PrunedModel:
    """Loading, pruning, prefill timing and per-sample stats shared by the model classes."""

    FAMILY: str = ""          # catalog.FAMILIES key of the checkpoints this class runs
    FAIL_PREFIX: str = ""     # the harness's failure marker, before a failed row's reason
    PROTOCOLS = ("hf",)       # the input protocols the class implements (protocols.PROTOCOLS)

    def _load_pruned(self, run: ModelRun) -> None:
        from transformers import AutoProcessor

        if run.family != self.FAMILY:
            raise ValueError(f"{type(self).__name__} runs the {self.FAMILY} family, not {run.base} ({run.family})")
        if run.get("protocol") not in self.PROTOCOLS:
            raise ValueError(f"{type(self).__name__} runs the {'/'.join(self.PROTOCOLS)} protocol, "
                             f"not {run.get('protocol')!r}")
        self.run, self.prune, self.model_name, self.model_path = run, run.prune, run.name, run.model_path
        self.device = default_device()
        dtype = run.get("dtype")
        self.dtype = getattr(torch, dtype, None) if dtype else default_dtype(self.device)
        if not isinstance(self.dtype, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}")
        cls = model_class(run.model_type)
        self.processor = AutoProcessor.from_pretrained(run.model_path)
        if getattr(self.processor, "chat_template", None) is None:
            raise ValueError(f"the processor of {run.model_path} has no chat template")
        # Left padding: the pruning score is read from the last position.
        self.processor.tokenizer.padding_side = "left"
        attn_impl = run.get("attn_impl", "sdpa")
        self.model = cls.from_pretrained(run.model_path, dtype=self.dtype, attn_implementation=attn_impl,
                                         device_map=self.device).eval()
        self.pruner = apply_pruning(self.model, run.prune)
        self.timer = PrefillTimer(self.model, self._on_prefill)  # after the pruner: sees its stats
        self.stats_log = StatsLog(run.stats_dir)
        self.rows = RowGuard.beside(run.stats_dir, self.FAIL_PREFIX)  # a bad row is a recorded failure
        self.expect = (run.setting.expect_sys_length, run.setting.expect_image_tokens)
        self._warned = set()
        self._first_prefill = None
        self.max_new_tokens = run.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS
        self.generate_kwargs = dict(run.get("generation") or GREEDY, max_new_tokens=self.max_new_tokens)
        self._generation_recorded = False
        log.info("%s: %s (%s, %s, %s), pruning %s", run.name, run.model_path, cls.__name__, self.dtype,
                 attn_impl, run.prune.tag())

    def _on_prefill(self, seconds: float, call: int) -> None:
        if call == 1:  # the prompt's prefill; recompute mode re-runs it per token
            self._first_prefill = (seconds, copy.copy(self.pruner.stats))

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

    def _call_kwargs(self) -> dict:
        """What ``generate`` is called with: the protocol's arguments, and no KV cache in recompute mode."""
        kwargs = dict(self.generate_kwargs)
        if self.prune.cache_mode == "recompute" and self.prune.prunes:
            kwargs["use_cache"] = False
        return kwargs

    def effective_generation(self) -> dict:
        """The arguments generate decodes with: the checkpoint's generation_config updated with ours, as
        transformers merges them (every value that differs from transformers' defaults, and the decoding ones)."""
        cfg = copy.deepcopy(self.model.generation_config)
        cfg.update(**self._call_kwargs())
        out = {k: v for k, v in cfg.to_diff_dict().items() if not k.startswith("_") and k != "transformers_version"}
        out.update({k: getattr(cfg, k, None) for k in DECODING_KEYS})
        return json.loads(json.dumps(out, sort_keys=True, default=str))

    def _start_peak_memory(self) -> None:
        if torch.cuda.is_available() and str(self.device).startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)

    def _peak_memory(self):
        """Peak GPU memory allocated since :meth:`_start_peak_memory` (None on CPU, where no per-call figure
        exists)."""
        if torch.cuda.is_available() and str(self.device).startswith("cuda"):
            return int(torch.cuda.max_memory_allocated(self.device))
        return None

    def _measured(self, call: Callable):
        """``call()`` under inference mode, with the prefill timer, the first prefill's record and the peak memory
        reset before it: (its result, its seconds, the peak GPU memory in bytes or None on CPU)."""
        self.timer.reset()
        self._first_prefill = None
        self._start_peak_memory()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = call()
        return out, time.perf_counter() - t0, self._peak_memory()

    def stats_line(self, dataset, index, stats: dict, **measured) -> dict:
        """One sample's stats line: what it is, the model and setting that ran it, what was measured, and the
        pruner's stats (``stats``, as ``PruneStats.to_dict`` gives them)."""
        return dict(dataset=dataset, index=index, model=self.model_name, setting=self.prune.tag(),
                    prefill_calls=len(self.timer.times), **measured, num_layers=self.pruner.num_layers,
                    device=self.device, dtype=str(self.dtype).replace("torch.", ""), **stats)

    def _generate(self, inputs, dataset) -> torch.Tensor:
        """Generate for one sample, log its stats, return the new token ids of row 0."""
        if not self._generation_recorded:  # once, after the model class has set its arguments (stop ids, ...)
            self._generation_recorded = True
            if int(os.environ.get("RANK", 0)) == 0:
                record_generation(self.run.run_dir, self.effective_generation())
        index = self.rows.take(dataset)
        sys_len, n_img = self._check_lengths(inputs["input_ids"])
        kwargs = self._call_kwargs()
        out, total, peak = self._measured(lambda: self.model.generate(**inputs, **kwargs))
        new = out[0, inputs["input_ids"].shape[1]:]
        prefill_s, stats = self._first_prefill or (None, self.pruner.stats)
        stats = stats.to_dict()
        self.stats_log.write(self.stats_line(
            dataset, index, stats, prefill_time_s=prefill_s, generate_time_s=total,
            peak_memory_bytes=peak, new_tokens=int(new.numel()), tokens_before_image=sys_len))
        if n_img and stats.get("n_image_tokens") != n_img:
            raise RuntimeError(f"the pruner saw {stats.get('n_image_tokens')} image tokens, the prompt has {n_img}")
        return new

    def _generate_rows(self, rows: Sequence[Dict[str, torch.Tensor]], kwargs: dict, pad_id: int):
        """One ``generate`` call for several samples' inputs (each as it is alone; any image counts, text-only
        rows included), joined with left padding: (each row's new token ids up to its first EOS, each row's own
        stats as batch 1 gives them, the batch's measured values per row)."""
        inputs = join_rows(rows, pad_id)
        out, total, peak = self._measured(lambda: self.model.generate(**inputs, **kwargs))
        prefill_s, stats = self._first_prefill or (None, copy.copy(self.pruner.stats))
        eos = kwargs.get("eos_token_id", self.model.generation_config.eos_token_id)
        eos = set([] if eos is None else [eos] if isinstance(eos, int) else eos)
        prompt_len, n = inputs["input_ids"].shape[1], len(rows)
        new_ids = []
        for b in range(n):
            new = out[b, prompt_len:].tolist()
            new_ids.append(new[:next((j + 1 for j, t in enumerate(new) if t in eos), len(new))])
        measured = dict(batch_rows=n, batch_prefill_time_s=prefill_s,
                        prefill_time_s=None if prefill_s is None else prefill_s / n, generate_time_s=total / n,
                        batch_peak_memory_bytes=peak)
        return new_ids, [stats.row(b).to_dict() for b in range(n)], measured

    def _generate_batch(self, rows: Sequence[Dict[str, torch.Tensor]], indices: Sequence, dataset) -> List[List[int]]:
        """:meth:`_generate` for several samples (``indices``) in one call: one stats line per sample, each with
        its own record; returns each sample's new token ids."""
        if not self._generation_recorded:
            self._generation_recorded = True
            if int(os.environ.get("RANK", 0)) == 0:
                record_generation(self.run.run_dir, self.effective_generation())
        lengths = [self._check_lengths(r["input_ids"]) for r in rows]
        pad = self.processor.tokenizer.pad_token_id
        pad = self.processor.tokenizer.eos_token_id if pad is None else pad
        new_ids, stats, measured = self._generate_rows(rows, self._call_kwargs(), 0 if pad is None else pad)
        for index, (sys_len, n_img), new, st in zip(indices, lengths, new_ids, stats):
            if n_img and st["n_image_tokens"] != n_img:
                raise RuntimeError(f"the pruner saw {st['n_image_tokens']} image tokens, the prompt has {n_img}")
        for index, (sys_len, _), new, st in zip(indices, lengths, new_ids, stats):
            self.stats_log.write(self.stats_line(dataset, index, st, **measured, new_tokens=len(new),
                                                 tokens_before_image=sys_len))
        return new_ids

    def _decode(self, ids: torch.Tensor) -> str:
        return self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()
