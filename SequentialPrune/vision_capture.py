"""Vision-tower attention statistics, captured on the way through the tower's own attention function.

A scorer that ranks image tokens by the vision tower's attention (FasterVLM) declares ``needs_vision``. The
pruner then installs a :class:`VisionCapture`: the vision config's attention implementation is switched to a
wrapper ``seqprune_vision_<impl>`` registered in transformers' ``AttentionInterface``, which calls the stock
sdpa / eager / flash function unchanged (so the tower's outputs are the stock ones) and, at ONE attention
module, first computes the statistic from the query and key states it is handed:

- ``cls``: the CLS query's softmax row over all keys, head mean: ``(B, T)`` per call (CLIP, InternViT);
- ``received``: the attention each token receives, head mean, SUMMED over the queries of its attention
  segment: ``(B, T)`` per call, or per ``cu_seq_lens`` segment of a packed flash call (SigLIP, Qwen). The
  adapter divides by the image's (or frame's) token count, which gives the query mean.

The probabilities are computed in float32 from ``softmax(q k^T * scaling + mask)``, never with
``output_attentions`` (sdpa and flash return no weights; Qwen towers return none at all).

Statistics are grouped per call of the model's ``get_image_features`` (shadowed on the instance to record its
arguments, which ``generate`` pops before the first forward): one :class:`VisionRecord` per call. The family
adapter turns the records into one score per LLM image token (``FamilyAdapter.vision``).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .attention_hooks import _stock_function

PREFIX = "seqprune_vision_"
_TARGETS: Dict[int, "VisionCapture"] = {}  # id(vision attention module) -> the capture that reads it
QUERY_CHUNK = 1 << 24  # elements of one (heads, queries, keys) block of received attention: bounds memory


@dataclass
class VisionRecord:
    """What one ``get_image_features`` call gave: its arguments and the statistic's pieces in call order."""
    call: dict
    statistic: str                        # "cls" or "received" (see STATISTICS)
    chunks: List[torch.Tensor] = field(default_factory=list)


def _bias(mask: Optional[torch.Tensor], rows: slice, kv: int) -> Optional[torch.Tensor]:
    """The mask's ``rows`` as an additive float32 bias ``(B or 1, 1 or H, q, kv)``, or None."""
    if mask is None:
        return None
    m = mask[..., rows, :kv]
    if m.dtype == torch.bool:
        return torch.zeros(m.shape, dtype=torch.float32, device=m.device).masked_fill(~m, float("-inf"))
    return m.float()


def cls_row(query, key, mask, scaling) -> torch.Tensor:
    """``(B, T)``: the softmax attention of query 0 (CLS) over every key, mean over heads, float32."""
    logits = torch.matmul(query[:, :, :1].float(), key.float().transpose(2, 3)) * scaling
    bias = _bias(mask, slice(0, 1), key.shape[2])
    if bias is not None:
        logits = logits + bias
    return torch.softmax(logits, dim=-1)[:, :, 0].mean(dim=1)


def received_sum(query, key, mask, scaling) -> torch.Tensor:
    """``(B, T)``: per key, the softmax attention summed over every query, mean over heads, float32 (queries
    in chunks, so that no ``(B, H, T, T)`` tensor is formed)."""
    b, h, t, _ = query.shape
    kt = key.float().transpose(2, 3)
    out = torch.zeros(b, key.shape[2], dtype=torch.float32, device=query.device)
    step = max(1, QUERY_CHUNK // max(1, b * h * key.shape[2]))
    for s in range(0, t, step):
        logits = torch.matmul(query[:, :, s:s + step].float(), kt) * scaling
        bias = _bias(mask, slice(s, s + step), key.shape[2])
        if bias is not None:
            logits = logits + bias
        out += torch.softmax(logits, dim=-1).sum(dim=2).mean(dim=1)
    return out


STATISTICS = {"cls": cls_row, "received": received_sum}


def _segments(query, key, kwargs):
    """(q, k) per attention segment: a packed flash call (``cu_seq_lens_q``) is split at its boundaries."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        return [(query, key)]
    bounds = [int(x) for x in cu.tolist()]
    return [(query[:, :, a:e], key[:, :, a:e]) for a, e in zip(bounds[:-1], bounds[1:])]


def _make_wrapper(base: str):
    def attention(module, query, key, value, attention_mask, **kwargs):
        cap = _TARGETS.get(id(module))
        if cap is not None and cap.open is not None:
            scaling = kwargs.get("scaling", getattr(module, "scaling", None))
            if scaling is None:
                scaling = query.shape[-1] ** -0.5
            fn = STATISTICS[cap.statistic]
            with torch.no_grad():
                for q, k in _segments(query, key, kwargs):
                    cap.open.chunks.append(fn(q, k, attention_mask if q is query else None, scaling))
        return _stock_function(module, base)(module, query, key, value, attention_mask, **kwargs)
    attention.__name__ = f"{PREFIX}{base}_attention"
    return attention


def ensure_registered(base: str) -> str:
    """Register the vision wrapper of stock implementation ``base``; return its name."""
    if base != "eager" and base not in ALL_ATTENTION_FUNCTIONS:
        raise ValueError(f"vision attention implementation {base!r} is not supported for vision-side scores; "
                         "use 'sdpa', 'eager' or a flash attention")
    name = PREFIX + base
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _make_wrapper(base))
    return name


class _Restore:
    """A handle deleting the instance attribute that shadows a method."""

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def remove(self):
        self.obj.__dict__.pop(self.name, None)


class VisionCapture:
    """Captures the vision statistic of ``model``'s tower (the adapter's ``vision`` spec) until :meth:`remove`.

    ``records`` holds one :class:`VisionRecord` per ``get_image_features`` call since the last prefill that read
    them; :meth:`token_scores` turns them into one score per LLM image token, in the order the model scatters
    image features into the prompt (row-major over the batch).
    """

    def __init__(self, model, adapter):
        spec = adapter.vision
        if spec is None:
            raise ValueError(f"{type(model).__name__}: the {adapter.family} adapter has no vision-tower capture, "
                             "so vision-side scorers cannot run on it")
        if spec.refusal:
            raise ValueError(f"{type(model).__name__}: vision-side scorers are not supported: {spec.refusal}")
        self.model, self.adapter, self.spec = model, adapter, spec
        self.inner = adapter.multimodal_model(model)
        self.module = spec.attention_module(model)
        self.statistic = "cls" if spec.has_cls(model) else "received"
        self.records: List[VisionRecord] = []
        self.open: Optional[VisionRecord] = None
        self.stale = False  # the records were read by a prefill: the next encoding starts afresh
        self.videos = False  # a get_video_features call came with these records
        self._handles = []
        vcfg = getattr(model.config, spec.config_key)
        orig = vcfg._attn_implementation or "eager"
        if orig.startswith(PREFIX) or id(self.module) in _TARGETS:
            raise ValueError("this model's vision tower is already captured by another pruner; call .remove() on it")
        name = ensure_registered(orig)
        model.set_attn_implementation({spec.config_key: name})
        if self.module.config._attn_implementation != name:
            model.set_attn_implementation({spec.config_key: orig})
            raise RuntimeError(f"could not switch the vision tower's attention to {name!r}")
        self._orig = orig
        _TARGETS[id(self.module)] = self
        self._shadow("get_image_features")
        if hasattr(self.inner, "get_video_features"):
            self._shadow("get_video_features", video=True)

    def _shadow(self, method: str, video: bool = False) -> None:
        stock = getattr(self.inner, method)
        sig = inspect.signature(stock)

        def wrapper(*args, **kwargs):
            if self.stale:
                self.records, self.stale, self.videos = [], False, False
            if video:  # no scores for video tokens yet: only noted, to refuse them with the reason
                self.videos = True
                return stock(*args, **kwargs)
            call = dict(sig.bind_partial(*args, **kwargs).arguments)
            call.update(call.pop("kwargs", None) or {})
            rec = VisionRecord(call, self.statistic)
            self.records.append(rec)
            self.open = rec
            try:
                return stock(*args, **kwargs)
            finally:
                self.open = None

        wrapper.__wrapped__ = stock
        setattr(self.inner, method, wrapper)
        self._handles.append(_Restore(self.inner, method))

    def new_prompt(self) -> None:
        """The coming forward encodes its own pixels: older records are not its images'."""
        self.stale = True

    def token_scores(self, counts: List[int], device) -> torch.Tensor:
        """``(B, max N)`` float32: the vision score of each row's prompt image tokens (``counts[b]`` of them,
        in prompt order; -inf beyond). Raises when the records do not cover exactly these image tokens."""
        if self.videos:
            raise RuntimeError("SequentialPrune: video tokens get no vision-side score yet: the vision-side "
                               "scorers (FasterVLM) take image inputs only")
        if not self.records:
            raise RuntimeError("SequentialPrune: the vision-side scorer found no vision-tower scores for this "
                               "prompt: its images were not encoded by get_image_features while the pruner was "
                               "applied (precomputed mm_encoder_outputs or image embeddings are not supported)")
        if any(not r.chunks for r in self.records):
            raise RuntimeError("SequentialPrune: an image was encoded without the vision capture seeing its attention "
                               "(was the vision attention implementation changed after apply_pruning?)")
        flat = self.spec.token_scores(self.model, self.records).float().flatten()
        self.stale = True  # recompute-mode generate re-reads them at each step's prefill; a new encoding replaces
        total = sum(counts)
        if flat.numel() != total:
            raise RuntimeError(f"SequentialPrune: the vision tower scored {flat.numel()} image tokens, but the prompt "
                               f"holds {total} image tokens (were images encoded by hand, without this prompt?)")
        out = torch.full((len(counts), max(counts) if counts else 0), float("-inf"))
        for b, piece in enumerate(torch.split(flat.cpu(), counts)):
            out[b, :piece.numel()] = piece
        return out.to(device)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if _TARGETS.get(id(self.module)) is self:
            del _TARGETS[id(self.module)]
            self.model.set_attn_implementation({self.spec.config_key: self._orig})
        self.records, self.open, self.videos = [], None, False
