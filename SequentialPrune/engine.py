"""The pruning engine: hooks on a stock model that drop image tokens inside the decoder.

How it works, in one place:
- a forward pre-hook on the model you pass sees ``input_ids`` and decides
  whether this call is a prefill (fresh or no cache) or a decode step on the
  cache our own prefill filled;
- at a prefill, the config's schedule says how many image tokens enter each
  layer; a pre-hook on each decoder layer shrinks the hidden states to the kept
  tokens and hands the layer gathered copies of the mask, position ids and
  RoPE cos/sin (kept tokens keep their original positions);
- the scorer picks which image tokens stay, from the last-token attention of
  the previous layer, which the attention wrapper (see ``attention.py``)
  computes from the query/key states the stock attention function receives;
- at decode steps, each pruned layer's cache holds only its kept tokens, so the
  full-length mask is gathered to the key positions that layer holds.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import partial
from typing import Dict, Optional, Set

import torch
from transformers.cache_utils import DynamicCache

from . import attention as attn
from .adapters import adapter_for
from .config import PruneConfig
from .gather import decode_key_index, take, take_mask, take_position_embeddings, take_position_ids
from .scorers import SCORERS
from .stats import PruneStats


@dataclass
class _Pass:
    """State of one prefill and the decode steps that follow it."""
    plan: Dict[int, int]
    prompt_len: int
    n_visual: int = 0                           # image tokens present now (same in every row)
    visual: Optional[torch.Tensor] = None       # (B, n_cur) visual flags of the tokens present now
    image_rank: Optional[torch.Tensor] = None   # (B, L) index of each token among the image tokens
    kept_abs: Optional[torch.Tensor] = None     # (B, n_cur) absolute positions present now; None = all
    score_layers: Set[int] = field(default_factory=set)
    scores: Dict[int, torch.Tensor] = field(default_factory=dict)
    layer_kept: Dict[int, torch.Tensor] = field(default_factory=dict)
    gathered: dict = field(default_factory=dict)
    visited: Set[int] = field(default_factory=set)
    cache: object = None
    decoding: bool = False


def _true_positions(mask: torch.Tensor, count: int) -> torch.Tensor:
    """Per row, the positions of the ``count`` True entries of ``mask``, in order.

    A stable sort puts them first without the host sync that ``nonzero`` needs.
    """
    return torch.sort(mask.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :count]


class Pruner:
    """Prunes image tokens of ``model`` according to ``config`` until :meth:`remove`.

    Use :func:`apply_pruning` to create one; it is also a context manager.
    """

    def __init__(self, model: torch.nn.Module, config: PruneConfig):
        if not isinstance(config, PruneConfig):
            raise TypeError(f"config must be a PruneConfig, got {type(config).__name__}")
        self.model, self.config = model, config
        self.adapter = adapter_for(model)
        self.layers = self.adapter.layers(model)
        self.text_config = self.adapter.text_config(model)
        self.num_layers = len(self.layers)
        config.check_model(self.num_layers)
        self.visual_ids = torch.tensor(self.adapter.visual_token_ids(model))
        self.attn_modules = []
        for i, layer in enumerate(self.layers):
            mod = getattr(layer, "self_attn", None)
            if mod is None or getattr(mod, "layer_idx", None) != i:
                raise ValueError(f"decoder layer {i} of {type(model).__name__} has no self_attn with layer_idx={i}; "
                                 "this model layout is not supported")
            self.attn_modules.append(mod)
        if not getattr(model, "_can_set_attn_implementation", lambda: True)():
            raise ValueError(f"{type(model).__name__} does not dispatch attention through AttentionInterface")
        self.scorer = SCORERS[config.scorer_name](seed=config.seed)
        self.stats = PruneStats(
            num_layers=self.num_layers, hidden_size=self.text_config.hidden_size,
            ffn_size=getattr(self.text_config, "intermediate_size", 4 * self.text_config.hidden_size))
        self._sig = inspect.signature(model.forward)
        self._handles = []
        self._state: Optional[_Pass] = None
        self._orig_attn: Optional[str] = None
        self._install()

    # ------------------------------------------------------------------ set-up
    def _install(self) -> None:
        orig = self.text_config._attn_implementation or "eager"
        if orig.startswith(attn.PREFIX):
            raise ValueError("this model already has a pruner applied; call .remove() on it first")
        name = attn.ensure_registered(orig)
        self._orig_attn = orig
        self.model.set_attn_implementation({self.adapter.text_config_key: name})
        if self.text_config._attn_implementation != name:
            self.model.set_attn_implementation({self.adapter.text_config_key: orig})
            raise RuntimeError(f"could not switch the text model's attention to {name!r}")
        m = self.model
        self._handles.append(m.register_forward_pre_hook(self._on_model_call, with_kwargs=True))
        self._handles.append(m.register_forward_hook(self._after_model_call, with_kwargs=True))
        for i, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_pre_hook(partial(self._on_layer, i), with_kwargs=True))
            attn.route(self.attn_modules[i], partial(self._on_attention, i))

    def remove(self) -> None:
        """Detach every hook and restore the original attention implementation."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for mod in self.attn_modules:
            attn.unroute(mod)
        if self._orig_attn is not None:
            self.model.set_attn_implementation({self.adapter.text_config_key: self._orig_attn})
            self._orig_attn = None
        self._state = None

    def __enter__(self) -> "Pruner":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # ------------------------------------------------------------ model call
    def _on_model_call(self, module, args, kwargs):
        cfg = self.config
        a = self._arguments(args, kwargs)
        ids, embeds, pkv = a.get("input_ids"), a.get("inputs_embeds"), a.get("past_key_values")
        if a.get("labels") is not None and cfg.prunes:
            raise ValueError("pruning changes the sequence length, so `labels` (training loss) are not supported")
        if pkv is not None and not isinstance(pkv, DynamicCache):
            raise ValueError(f"{type(pkv).__name__} is not supported: pruned layers hold fewer tokens than others. "
                             "Use the default DynamicCache (do not pass cache_implementation='static').")
        if cfg.cache_mode == "recompute" and cfg.prunes:
            use_cache = a.get("use_cache")
            if use_cache or (pkv is not None and pkv.get_seq_length() > 0):
                raise ValueError("cache_mode='recompute' re-runs the whole sequence at every step: call "
                                 "model.generate(..., use_cache=False), or use cache_mode='static'")
            if "use_cache" not in a:
                kwargs["use_cache"] = False
        past_len = pkv.get_seq_length() if pkv is not None else 0
        # transformers >= 5.2x encodes images before the first forward and passes mm_encoder_outputs instead
        has_pixels = any(a.get(k) is not None for k in self.adapter.pixel_keys) or bool(a.get("mm_encoder_outputs"))
        if ids is None and embeds is not None:
            if cfg.prunes:
                raise ValueError("inputs_embeds without input_ids: image tokens are found from input_ids, so pass "
                                 "input_ids (and pixel_values) instead of inputs_embeds")
            self._state = None
            return None
        visual = torch.isin(ids, self.visual_ids.to(ids.device))
        if past_len > 0:
            self._start_decode(pkv, ids, visual, has_pixels)
            return args, kwargs
        self._start_prefill(ids, visual, has_pixels, a.get("attention_mask"))
        return args, kwargs

    def _arguments(self, args, kwargs) -> dict:
        """The call's arguments by name, with those passed through ``**kwargs`` flattened in."""
        a = dict(self._sig.bind_partial(*args, **kwargs).arguments)
        for name, p in self._sig.parameters.items():
            if p.kind is inspect.Parameter.VAR_KEYWORD and isinstance(a.get(name), dict):
                a.update(a.pop(name))
        return a

    def _start_decode(self, pkv, ids, visual, has_pixels) -> None:
        st = self._state
        ours = st is not None and st.cache is pkv
        if bool(visual.any()) or has_pixels:
            raise ValueError("image tokens arrived on a non-empty cache (chunked prefill, or continuing from a "
                             "cache with a new image), which is not supported: run the whole prompt with its images "
                             "in one prefill from an empty cache (no prefill_chunk_size)")
        if ours and st.layer_kept:
            if ids.shape[1] != 1:
                raise ValueError("a pruned KV cache can only be extended one token at a time: chunked prefill, "
                                 "assisted/speculative decoding and multi-token continuation are not supported")
            st.decoding = True
            st.gathered.clear()  # the decode mask is a new tensor at every step
            return
        if ours:  # an unpruned prefill (no image tokens): nothing to gather
            st.decoding = True
            return
        lengths = {layer.get_seq_length() if hasattr(layer, "get_seq_length") else None for layer in pkv.layers}
        if len(lengths) > 1:
            raise ValueError("this KV cache was pruned by an earlier prefill that is no longer current "
                             "(a copied cache or another generate call); re-run the prompt")
        self._state = None

    def _start_prefill(self, ids, visual, has_pixels, mask2d) -> None:
        cfg = self.config
        b, length = ids.shape
        counts = visual.sum(dim=1)
        n = int(counts[0])
        if has_pixels and int(counts.max()) == 0:
            raise ValueError(
                f"pixel inputs were given but input_ids hold no image token (ids {self.visual_ids.tolist()}); "
                "the prompt must contain the processor's image placeholders (check the model's image_token_id)")
        if cfg.prunes and n > 0:
            if bool((counts != n).any()):
                raise ValueError(f"rows of the batch have different numbers of image tokens ({counts.tolist()}); "
                                 "use batch size 1 or images that give equal token counts")
            if mask2d is not None and mask2d.dim() == 2 and bool((mask2d[:, -1] == 0).any()):
                raise ValueError("right padding puts pad tokens last, but scores come from the last token: use "
                                 "left padding (processor.tokenizer.padding_side = 'left')")
        plan = cfg.plan(n) if (cfg.prunes and n > 0) else {}
        st = _Pass(plan=plan, prompt_len=length, n_visual=n)
        if plan:
            st.visual = visual
            rank = torch.cumsum(visual.long(), dim=1) - 1
            st.image_rank = rank
            if self.scorer.needs_attention:
                st.score_layers = {layer - 1 for layer in plan}
        self.scorer.reset()
        self.stats.reset(n, length, b)
        self._state = st

    def _after_model_call(self, module, args, kwargs, output):
        st = self._state
        if st is None or st.decoding:
            return None
        missing = sorted(set(range(self.num_layers)) - st.visited)
        if missing:
            raise RuntimeError(f"SequentialPrune: decoder layers {missing} ran without the pruning hooks; "
                               "pruning would silently not apply to this model")
        if st.scores and self.scorer.needs_attention:
            raise RuntimeError(f"SequentialPrune: scores of layers {sorted(st.scores)} were computed but never used")
        self.stats.prefills += 1
        st.cache = getattr(output, "past_key_values", None)
        st.gathered.clear()
        return None

    # ------------------------------------------------------------ layer call
    def _on_layer(self, i: int, module, args, kwargs):
        st = self._state
        if st is None:
            return None
        if st.decoding:
            kept = st.layer_kept.get(i)
            mask = kwargs.get("attention_mask")
            if kept is not None and mask is not None:
                # layers after the last pruning layer share one kept set: gather their mask once per step
                tag = ("decode", id(mask), id(kept))
                if tag not in st.gathered:
                    st.gathered[tag] = take(mask, decode_key_index(kept, st.prompt_len, mask.shape[-1]), -1)
                kwargs["attention_mask"] = st.gathered[tag]
            return args, kwargs
        st.visited.add(i)
        if not st.plan:
            return None
        hidden_in_args = len(args) > 0
        hidden = args[0] if hidden_in_args else kwargs["hidden_states"]
        if i in st.plan:
            hidden = self._prune(i, hidden, st)
        if st.kept_abs is not None:
            for key, fn in (("attention_mask", take_mask), ("position_ids", take_position_ids),
                            ("position_embeddings", take_position_embeddings)):
                v = kwargs.get(key)
                if v is None:
                    continue
                tag = (key, id(v[0]) if isinstance(v, tuple) else id(v))
                if tag not in st.gathered:
                    st.gathered[tag] = fn(v, st.kept_abs)
                kwargs[key] = st.gathered[tag]
            st.layer_kept[i] = st.kept_abs
        self.stats.image_tokens_per_layer[i] = st.n_visual
        if hidden_in_args:
            return (hidden,) + tuple(args[1:]), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs

    def _prune(self, i: int, hidden: torch.Tensor, st: _Pass) -> torch.Tensor:
        vis = st.visual
        b, n_cur = vis.shape
        n_vis = st.n_visual
        keep_k = min(st.plan[i], n_vis)
        att = st.scores.pop(i - 1, None)
        if keep_k == n_vis:
            return hidden
        if self.scorer.needs_attention and att is None:
            raise RuntimeError(
                f"SequentialPrune: no attention score from layer {i - 1}: the attention wrapper did not run "
                f"(was the attention implementation changed after apply_pruning?)")
        if att is not None and att.shape != (b, n_cur):
            raise RuntimeError(f"SequentialPrune: layer {i - 1} score has shape {tuple(att.shape)}, "
                               f"expected {(b, n_cur)}")
        s = self.scorer.score(i, att, n_cur, b, vis.device).to(vis.device, torch.float32)
        s = s.masked_fill(~vis, float("-inf"))
        top = s.topk(keep_k, dim=1).indices
        keep = (~vis).scatter(1, top, True)
        rel = _true_positions(keep, n_cur - n_vis + keep_k)
        base = st.kept_abs if st.kept_abs is not None else \
            torch.arange(st.prompt_len, device=vis.device).expand(b, -1)
        st.kept_abs = base.gather(1, rel)
        st.visual = vis.gather(1, rel)
        st.n_visual = keep_k
        st.gathered.clear()
        img = st.image_rank.gather(1, st.kept_abs.gather(1, _true_positions(st.visual, keep_k)))
        self.stats.kept_image_indices[i] = img
        return take(hidden, rel, 1)

    # -------------------------------------------------------- attention call
    def _on_attention(self, i: int, module, query, key, attention_mask, kwargs) -> None:
        st = self._state
        if st is None or st.decoding or i not in st.score_layers:
            return
        scaling = kwargs.get("scaling", getattr(module, "scaling", None))
        s = attn.last_token_scores(query, key, attention_mask, scaling)
        st.scores[i] = s
        self.stats.scores[i] = s.detach()


def apply_pruning(model: torch.nn.Module, config: PruneConfig) -> Pruner:
    """Start pruning ``model`` with ``config``; returns the :class:`Pruner` (call ``.remove()`` or use ``with``)."""
    return Pruner(model, config)
