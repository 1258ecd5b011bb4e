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

A merging scorer (VisionZip) also asks for, at the same layer and through the same calls (``needs_vision`` lists
them): ``keys``, the key states averaged over heads (its merge metric); ``features``, what the family's projector
receives (a forward pre-hook on it: the pre-projector features); ``cls``, the select layer's output at token 0
(a forward hook on the block holding the attention module: the CLS feature, which LLaVA's projector never sees).

A scorer may also force the ``received`` statistic on a tower with CLS (HiPrune) and name further layers whose
statistic is recorded the same way (``extra_vision_layers``: HiPrune's object layer).

Statistics are grouped per call of the model's ``get_image_features`` (shadowed on the instance to record its
arguments, which ``generate`` pops before the first forward): one :class:`VisionRecord` per call. The family
adapter turns the records into one score per LLM image token (``FamilyAdapter.vision``).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Tuple

import torch
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .attention_hooks import _stock_function

PREFIX = "seqprune_vision_"
# id(vision attention module) -> (the capture that reads it, its slots: None = the select layer, i = extra layer i)
_TARGETS: Dict[int, Tuple["VisionCapture", tuple]] = {}
QUERY_CHUNK = 1 << 24  # elements of one (heads, queries, keys) block of received attention: bounds memory


def _by_row(flat: torch.Tensor, counts: List[int], fill, device) -> torch.Tensor:
    """``(B, max N)``: each row's ``counts[b]`` values of ``flat`` (the prompt's image tokens, row after row), then
    ``fill``. Laid out where the tower ran: a copy to the host would stall a GPU at every prompt."""
    out = torch.full((len(counts), max(counts) if counts else 0), fill, dtype=flat.dtype, device=flat.device)
    for b, piece in enumerate(torch.split(flat, counts)):
        out[b, :piece.numel()] = piece
    return out.to(device)


@dataclass
class VisionRecord:
    """What one ``get_image_features`` call gave: its arguments and the statistic's pieces in call order."""
    call: dict
    statistic: str                        # "cls" or "received" (see STATISTICS)
    chunks: List[torch.Tensor] = field(default_factory=list)
    keys: List[torch.Tensor] = field(default_factory=list)       # (B, T, Dh) head-mean keys, per chunk
    features: List[torch.Tensor] = field(default_factory=list)   # the projector's inputs
    cls: List[torch.Tensor] = field(default_factory=list)        # (B, C) the select layer's output at token 0
    by_layer: Dict[int, List[torch.Tensor]] = field(default_factory=dict)  # extra layer -> its statistic's chunks


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
        cap, slots = _TARGETS.get(id(module), (None, ()))
        if cap is not None and cap.open is not None:
            scaling = kwargs.get("scaling", getattr(module, "scaling", None))
            if scaling is None:
                scaling = query.shape[-1] ** -0.5
            fn = STATISTICS[cap.statistic]
            with torch.no_grad():
                for q, k in _segments(query, key, kwargs):
                    stat = fn(q, k, attention_mask if q is query else None, scaling)
                    for slot in slots:
                        (cap.open.chunks if slot is None else cap.open.by_layer.setdefault(slot, [])).append(stat)
                    if "keys" in cap.needs and None in slots:
                        cap.open.keys.append(k.float().mean(dim=1))
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


def _parent(model, module):
    """The module that holds ``module`` as a direct child (the vision block of an attention module)."""
    for m in model.modules():
        if any(c is module for c in m.children()):
            return m
    raise ValueError(f"{type(module).__name__} has no parent module in {type(model).__name__}")


class _Restore:
    """A handle deleting the instance attribute that shadows a method."""

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def remove(self):
        self.obj.__dict__.pop(self.name, None)


class VisionCapture:
    """Captures the vision statistic of ``model``'s tower (the adapter's ``vision`` spec) until :meth:`remove`.

    ``needs``: what else to record at the select layer (``keys``, ``features``, ``cls``); ``statistic``: force
    ``"received"`` (or ``"cls"``) instead of the tower's default; ``extra_layers``: ``fn(n_layers, has_cls) ->
    indices`` of further tower layers whose statistic is recorded too (HiPrune's object layer).

    ``records`` holds one :class:`VisionRecord` per ``get_image_features`` call since the last prefill that read
    them; :meth:`token_scores` turns them into one score per LLM image token, in the order the model scatters
    image features into the prompt (row-major over the batch).
    """

    def __init__(self, model, adapter, needs=frozenset(), statistic: Optional[str] = None,
                 extra_layers: Optional[Callable[[int, bool], Tuple[int, ...]]] = None):
        spec = adapter.vision
        if spec is None:
            raise ValueError(f"{type(model).__name__}: the {adapter.family} adapter has no vision-tower capture, "
                             "so vision-side scorers cannot run on it")
        if spec.refusal:
            raise ValueError(f"{type(model).__name__}: vision-side scorers are not supported: {spec.refusal}")
        self.model, self.adapter, self.spec = model, adapter, spec
        self.needs = frozenset(needs) - {True}
        unknown = self.needs - {"keys", "features", "cls"}
        if unknown:
            raise ValueError(f"unknown vision capture needs {sorted(unknown)}")
        if self.needs and spec.merge is None:
            raise ValueError(f"{type(model).__name__}: vision-side scorers that read the tower's keys or features "
                             f"(VisionZip, VisPruner) are not supported on the {adapter.family} family: "
                             f"{spec.merge_refusal}")
        self.inner = adapter.multimodal_model(model)
        self.module = spec.attention_module(model)
        self.statistic = statistic or ("cls" if spec.has_cls(model) else "received")
        if self.statistic not in STATISTICS or (self.statistic == "cls" and not spec.has_cls(model)):
            raise ValueError(f"{type(model).__name__}: vision statistic {self.statistic!r} is not available")
        layers = spec.layers(model)
        self.extra = tuple(extra_layers(len(layers), spec.has_cls(model))) if extra_layers else ()
        for i in self.extra:
            if not 0 <= i < len(layers):
                raise ValueError(f"{type(model).__name__}: vision layer {i + 1} is outside the tower's {len(layers)} "
                                 "layers")
        slots: Dict[int, list] = {id(self.module): [None]}
        self._modules = {id(self.module): self.module}
        for i in self.extra:
            slots.setdefault(id(layers[i]), []).append(i)
            self._modules[id(layers[i])] = layers[i]
        self.records: List[VisionRecord] = []
        self.open: Optional[VisionRecord] = None
        self.stale = False  # the records were read by a prefill: the next encoding starts afresh
        self.videos = False  # a get_video_features call came with these records
        self._handles = []
        vcfg = getattr(model.config, spec.config_key)
        orig = vcfg._attn_implementation or "eager"
        if orig.startswith(PREFIX) or any(k in _TARGETS for k in self._modules):
            raise ValueError("this model's vision tower is already captured by another pruner; call .remove() on it")
        name = ensure_registered(orig)
        model.set_attn_implementation({spec.config_key: name})
        if self.module.config._attn_implementation != name:
            model.set_attn_implementation({spec.config_key: orig})
            raise RuntimeError(f"could not switch the vision tower's attention to {name!r}")
        self._orig = orig
        for k, v in slots.items():
            _TARGETS[k] = (self, tuple(v))
        self._shadow("get_image_features")
        if hasattr(self.inner, "get_video_features"):
            self._shadow("get_video_features", video=True)
        if "features" in self.needs:
            self._handles.append(spec.merge.projector(model).register_forward_pre_hook(self._on_projector))
        if "cls" in self.needs and self.statistic == "cls":
            self._handles.append(_parent(model, self.module).register_forward_hook(self._on_block))

    def _on_projector(self, module, args):
        if self.open is not None:
            self.open.features.append(args[0].detach())

    def _on_block(self, module, args, output):
        if self.open is not None:
            out = output[0] if isinstance(output, tuple) else output
            self.open.cls.append(out[:, 0].detach())

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

    def token_scores(self, counts: List[int], device, layer: Optional[int] = None) -> torch.Tensor:
        """``(B, max N)`` float32: the vision score of each row's prompt image tokens (``counts[b]`` of them,
        in prompt order; -inf beyond), at the select layer or at extra ``layer``. Raises when the records do not
        cover exactly these image tokens."""
        if self.videos:
            raise RuntimeError("SequentialPrune: video tokens get no vision-side score yet: the vision-side "
                               "scorers (FasterVLM, VisionZip, VisPruner, HiPrune) take image inputs only")
        if not self.records:
            raise RuntimeError("SequentialPrune: the vision-side scorer found no vision-tower scores for this "
                               "prompt: its images were not encoded by get_image_features while the pruner was "
                               "applied (precomputed mm_encoder_outputs or image embeddings are not supported)")
        if any(not r.chunks for r in self.records):
            raise RuntimeError("SequentialPrune: an image was encoded without the vision capture seeing its attention "
                               "(was the vision attention implementation changed after apply_pruning?)")
        records = self.records if layer is None else \
            [replace(r, chunks=r.by_layer.get(layer, [])) for r in self.records]
        if any(not r.chunks for r in records):
            raise RuntimeError(f"SequentialPrune: vision layer {layer} recorded no attention")
        flat = self.spec.token_scores(self.model, records).float().flatten()
        self.stale = True  # recompute-mode generate re-reads them at each step's prefill; a new encoding replaces
        total = sum(counts)
        if flat.numel() != total:
            raise RuntimeError(f"SequentialPrune: the vision tower scored {flat.numel()} image tokens, but the prompt "
                               f"holds {total} image tokens (were images encoded by hand, without this prompt?)")
        return _by_row(flat, counts, float("-inf"), device)

    def token_units(self, counts: List[int], device) -> Optional[torch.Tensor]:
        """``(B, max N)`` long: the vision-encoder input (image, crop, tile) of each row's prompt image tokens, as
        the family's ``VisionSpec.token_units`` numbers them; -1 beyond a row's own and for tokens of none. None
        where the family defines no units. Call after :meth:`token_scores` (which checks the records)."""
        if self.spec.token_units is None:
            return None
        flat = self.spec.token_units(self.model, self.records).long().flatten()
        if flat.numel() != sum(counts):
            raise RuntimeError(f"SequentialPrune: the vision units cover {flat.numel()} image tokens, but the prompt "
                               f"holds {sum(counts)}")
        return _by_row(flat, counts, -1, device)

    def token_data(self, counts: List[int]) -> List[dict]:
        """Per row, what a merging scorer reads of its ``counts[b]`` prompt image tokens (in prompt order), as the
        adapter's ``MergeSpec`` maps it: ``keys`` ``(n, Dh)``, ``features`` ``(n, C)`` in the projector's input
        space, ``cls``: ``[(first image token, CLS feature)]`` per image with a CLS the projector can take,
        ``pool``: ``(n,)`` bool, the tokens a merging scorer may keep or merge (None: all)."""
        merge = self.spec.merge
        keys = merge.token_keys(self.model, self.records).float() if "keys" in self.needs else None
        feats = merge.token_features(self.model, self.records) if "features" in self.needs else None
        cls = merge.cls_features(self.model, self.records) if "cls" in self.needs and merge.cls_features else []
        pool = merge.token_pool(self.model, self.records) if merge.token_pool else None
        out, start = [], 0
        for c in counts:
            row = {"keys": None if keys is None else keys[start:start + c],
                   "features": None if feats is None else feats[start:start + c],
                   "cls": [(s - start, f) for s, f in cls if start <= s < start + c],
                   "pool": None if pool is None else pool[start:start + c]}
            out.append(row)
            start += c
        for name, t in (("keys", keys), ("features", feats), ("pool", pool)):
            if t is not None and t.shape[0] != start:
                raise RuntimeError(f"SequentialPrune: the vision tower gave {name} for {t.shape[0]} image tokens, "
                                   f"but the prompt holds {start}")
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if _TARGETS.get(id(self.module), (None,))[0] is self:
            for k in self._modules:
                _TARGETS.pop(k, None)
            self.model.set_attn_implementation({self.spec.config_key: self._orig})
        self.records, self.open, self.videos = [], None, False
