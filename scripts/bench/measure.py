"""Timing one ``generate`` call: vision tower, decoder prefill, time to first token, decode, memory, KV bytes.

Everything comes from one call, so the pieces add up: forward hooks on the
vision modules and on the language model stamp their start and end, and a
streamer stamps every generated token. Stamps are CUDA events on a GPU (no
host sync inside the forward) and ``time.perf_counter`` on a CPU.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from transformers.generation.streamers import BaseStreamer

from SequentialPrune import adapter_for

# model_type -> attributes of the multimodal model that make up the vision encoder (tower + projector)
VISION_MODULES: Dict[str, Tuple[str, ...]] = {
    "llava": ("vision_tower", "multi_modal_projector"),
    "llava_next": ("vision_tower", "multi_modal_projector"),
    "llava_onevision": ("vision_tower", "multi_modal_projector"),
    "internvl": ("vision_tower", "multi_modal_projector"),
    "qwen2_vl": ("visual",),
    "qwen2_5_vl": ("visual",),
    "qwen3_vl": ("visual",),
    "qwen3_vl_moe": ("visual",),
}


class Clock:
    """Stamps and elapsed milliseconds between them."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def ms(self, a, b) -> float:
        return a.elapsed_time(b) if self.cuda else (b - a) * 1e3

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


class PeakMemory:
    """Peak GPU memory allocated, or peak RSS on Linux (reset through /proc/self/clear_refs)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.kind = "cuda_max_memory_allocated" if self.cuda else "peak_rss"
        self.base = 0

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return
        try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0); cheap
            Path("/proc/self/clear_refs").write_text("5")
            self.base = _status_kb("VmRSS") * 1024
        except OSError:
            self.kind, self.base = "ru_maxrss_lifetime", 0

    def peak(self) -> Optional[int]:
        if self.cuda:
            return int(torch.cuda.max_memory_allocated())
        if self.kind == "peak_rss":
            return _status_kb("VmHWM") * 1024
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(key)


def cache_bytes(cache) -> Optional[int]:
    """Bytes held by the keys and values of a DynamicCache (metadata only, no sync)."""
    if cache is None:
        return None
    total = 0
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def expected_cache_bytes(text_config, batch: int, tokens_per_layer: List[int], dtype: torch.dtype) -> int:
    """Keys plus values: tokens entering each layer x kv heads x head_dim x 2 x dtype size."""
    heads = text_config.num_attention_heads
    kv = getattr(text_config, "num_key_value_heads", None) or heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    size = torch.empty((), dtype=dtype).element_size()
    return batch * sum(tokens_per_layer) * kv * head_dim * 2 * size


class _TokenStamps(BaseStreamer):
    """A streamer that stamps each generated token (generate first puts the prompt: skipped)."""

    def __init__(self, clock: Clock):
        self.clock, self.marks, self._prompt = clock, [], True

    def put(self, value) -> None:
        if self._prompt:
            self._prompt = False
            return
        self.marks.append(self.clock.mark())

    def end(self) -> None:
        pass


@dataclass
class _Spans:
    starts: list = field(default_factory=list)
    spans: list = field(default_factory=list)


class Probe:
    """Hooks stamping the vision encoder and the language model of ``model`` (remove with :meth:`remove`)."""

    def __init__(self, model, clock: Clock):
        self.clock = clock
        mm = adapter_for(model).multimodal_model(model)
        vision = [getattr(mm, n) for n in VISION_MODULES[model.config.model_type] if getattr(mm, n, None) is not None]
        self.n_vision = max(1, len(vision))
        self.vision, self.lm = _Spans(), _Spans()
        self.prefill_cache = None
        self._handles = []
        for mod in vision:
            self._hook(mod, self.vision)
        self._hook(mm.language_model, self.lm, on_end=self._first_cache)

    def _hook(self, mod, spans: _Spans, on_end=None) -> None:
        def pre(*_):
            spans.starts.append(self.clock.mark())

        def post(_m, _a, out):
            spans.spans.append((spans.starts.pop(), self.clock.mark()))
            if on_end is not None:
                on_end(out)
        self._handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]

    def _first_cache(self, out) -> None:
        if len(self.lm.spans) == 1:  # the prefill: its cache holds exactly the prompt's kept tokens
            self.prefill_cache = cache_bytes(getattr(out, "past_key_values", None))

    def reset(self) -> None:
        for s in (self.vision, self.lm):  # in place: the hooks hold these objects
            s.starts.clear()
            s.spans.clear()
        self.prefill_cache = None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def measure_generate(model, inputs: dict, new_tokens: int, use_cache: bool, probe: Probe,
                     memory: PeakMemory) -> dict:
    """Run ``generate`` once and return its timings (ms), peak memory and prefill KV bytes."""
    clock = probe.clock
    probe.reset()
    stamps = _TokenStamps(clock)
    clock.sync()
    memory.reset()
    t0 = clock.mark()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             use_cache=use_cache, streamer=stamps)
    t1 = clock.mark()
    clock.sync()
    ms = clock.ms
    tok = stamps.marks
    lm = [ms(a, b) for a, b in probe.lm.spans]
    return {
        "e2e_ms": ms(t0, t1),
        "ttft_ms": ms(t0, tok[0]),
        "decode_ms_per_token": ms(tok[0], tok[-1]) / (len(tok) - 1) if len(tok) > 1 else None,
        "prefill_ms": lm[0],  # the decoder's first call: the prefill, without the vision tower
        "decode_lm_ms": statistics.median(lm[1:]) if len(lm) > 1 else None,
        "vision_ms": sum(ms(a, b) for a, b in probe.vision.spans),
        "vision_calls": len(probe.vision.spans) // probe.n_vision,  # encoder passes (5.17 re-encodes without a cache)
        "peak_mem_bytes": memory.peak(),
        "peak_mem_delta_bytes": (memory.peak() or 0) - memory.base,
        "kv_bytes": probe.prefill_cache,
        "new_tokens": int(out.shape[1] - inputs["input_ids"].shape[1]),
        "tokens": out[0, inputs["input_ids"].shape[1]:].tolist(),
    }
