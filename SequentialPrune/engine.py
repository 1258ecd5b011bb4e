"""The pruning engine: hooks on a stock model that drop image tokens inside the decoder.

How it works, in one place:
- a forward pre-hook on the model you pass sees ``input_ids`` and decides
  whether this call is a prefill (fresh or no cache) or a decode step on the
  cache our own prefill filled;
- at a prefill, the config's schedule says how many image tokens enter each
  layer; a pre-hook on each decoder layer shrinks the hidden states to the kept
  tokens and hands the layer gathered copies of the mask, position ids and
  RoPE cos/sin (kept tokens keep their original positions, or are renumbered
  contiguously, as the setting says);
- the scorer picks which image tokens stay. What it reads of the previous
  layer (its last-token attention, its keys) the attention wrapper (see
  ``attention_hooks.py``) captures from the states the stock attention function
  receives; a scorer of the pruning layer's own attention gets a "probe" that
  runs that layer's attention module on the tokens present; a scorer of the
  vision tower's own attention (``needs_vision``) reads what ``vision_capture.py``
  recorded while the images were encoded, mapped by the adapter to the image
  tokens at the start of the text model's prefill;
- a merging scorer (VisionZip) also returns new hidden states for some kept
  slots (``scorers.Selection``); they are written into those slots as the
  layer prunes, so a merged token is a kept token like any other;
- a combination (``PruneConfig(before=...)``) runs its stages in the same pass: the before stage's scorer
  and positions convention at layer 0, the decoder-side stage's from its first layer on
  (``Pruner._stage_at``); the plan is the config's combined plan;
- at decode steps, each pruned layer's cache holds only its kept tokens, so the
  full-length mask is gathered to the key positions that layer holds. When
  layer 0 itself is pruned (K = 0), the 2-D padding mask is gathered to layer
  0's tokens on the way into the text model, since masks are sized from it;
- in a batch, each row follows its own plan (from its own image-token count).
  After a pruning layer a row holds its kept tokens, right-aligned, and rows
  that hold fewer than the longest are padded on the left with masked slots
  (copies of the row's last token that no query sees as a key); the input's
  own left padding is folded into these slots at the first pruning layer.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Dict, List, Optional, Set, Tuple

import torch
from transformers.cache_utils import Cache, DynamicCache

from . import attention_hooks as attn
from .adapters import CoordsContext, adapter_for
from .config import PruneConfig
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask, flash_attention_mask

from .gather import (build_mask, decode_key_index, hide_keys, relative_index, take, take_mask,
                     take_position_embeddings, take_position_ids)
from .scorers import ScoreInputs, Selection, keep_mask
from .stats import PruneStats
from .vision_capture import VisionCapture


@dataclass
class _Pass:
    """State of one prefill and the decode steps that follow it."""
    plan: Dict[int, List[int]]                  # layer -> image tokens each row keeps entering it
    prompt_len: int
    n_image: List[int] = field(default_factory=list)    # per row: image tokens of the prompt
    n_visual: List[int] = field(default_factory=list)   # per row: image tokens present now
    n_real: List[int] = field(default_factory=list)     # per row: tokens present now, padding left out
    padded: bool = False                        # the slots present now include padding
    visual: Optional[torch.Tensor] = None       # (B, n_cur) visual flags of the tokens present now
    valid: Optional[torch.Tensor] = None        # (B, n_cur) False for padding
    image_rank: Optional[torch.Tensor] = None   # (B, L) index of each token among the image tokens
    kept_abs: Optional[torch.Tensor] = None     # (B, n_cur) absolute positions present now; None = all
    positions: Optional[torch.Tensor] = None    # (B, n_cur) renumbered RoPE positions present now
    renumbered: List[int] = field(default_factory=list)  # per row: image tokens dropped by renumbering stages
    input_ids: Optional[torch.Tensor] = None    # (B, L) the prompt
    coords: Optional[torch.Tensor] = None       # (B, N, 3) (segment, row, col) of the image tokens
    vision: Optional[torch.Tensor] = None       # (B, N) vision-tower scores of the image tokens
    units: Optional[torch.Tensor] = None        # (B, N) vision-encoder input (image, crop, tile) of each one
    vision_tokens: Optional[list] = None        # per row: keys / features / CLS for merging scorers
    vision_layers: Dict[int, torch.Tensor] = field(default_factory=dict)  # extra vision layer -> (B, N) scores
    need: Dict[int, Set[str]] = field(default_factory=dict)   # layer -> what its attention call must capture
    captured: Dict[int, dict] = field(default_factory=dict)
    layer_kept: Dict[int, torch.Tensor] = field(default_factory=dict)
    layer_valid: Dict[int, torch.Tensor] = field(default_factory=dict)   # pruned layers holding padding slots
    layer_shift: Dict[int, Tuple[int, ...]] = field(default_factory=dict)  # renumbering: per row, dropped before
    decode_index: Dict[int, torch.Tensor] = field(default_factory=dict)
    gathered: dict = field(default_factory=dict)
    visited: Set[int] = field(default_factory=set)
    probe: Optional[torch.Tensor] = None
    cache: object = None
    decoding: bool = False


@dataclass
class _Stage:
    """One stage of a setting (``PruneConfig.stages``): from ``first_layer`` on, its scorer picks the kept tokens
    and ``positions`` ("original", "renumber"; None: it prunes nothing) numbers them."""
    first_layer: int
    scorer: object
    positions: Optional[str]


_PRUNED_TAG = "_seqprune_pruned"  # set on a cache whose layers hold only the tokens a prefill kept


def _output_cache(output):
    """The KV cache a model call returned (a ModelOutput, or a tuple with return_dict=False)."""
    if isinstance(output, tuple):
        return next((o for o in output if isinstance(o, Cache)), None)
    return getattr(output, "past_key_values", None)


def _true_positions(mask: torch.Tensor, count: int) -> torch.Tensor:
    """Per row, the positions of the ``count`` True entries of ``mask``, in order.

    A stable sort puts them first without the host sync that ``nonzero`` needs.
    """
    return torch.sort(mask.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :count]


_PER_TOKEN = ("attention_mask", "position_ids", "position_embeddings")


def _with_new(valid: torch.Tensor, kv_len: int) -> torch.Tensor:
    """A pruned layer's key validity at decode: its prompt slots', then every generated token (valid)."""
    return torch.cat([valid, valid.new_ones(valid.shape[0], kv_len - valid.shape[1])], dim=1)


class _GenerateCalls:
    """Wraps ``model.generate`` to count this pruner's generate calls in progress, as a hook handle.

    Inside ``generate(use_cache=False)`` each step's prefill extends the previous prompt, re-selecting the image
    tokens every step (``cache_mode='recompute'``); outside ``generate`` such calls are independent prefills, as
    log-likelihood scoring of a continuation makes them, and are allowed.
    """

    def __init__(self, pruner: "Pruner"):
        model, inner = pruner.model, pruner.model.generate
        self.model, self.pruner = model, pruner
        self.previous = vars(model).get("generate")  # an instance override to put back, if any

        def generate(*args, **kwargs):
            pruner._generating += 1
            try:
                return inner(*args, **kwargs)
            finally:
                pruner._generating -= 1

        generate.__doc__, generate.__wrapped__ = inner.__doc__, inner
        self.wrapper = model.generate = generate

    def remove(self) -> None:
        if vars(self.model).get("generate") is not self.wrapper:
            return  # already undone
        if self.previous is None:
            del self.model.generate
        else:
            self.model.generate = self.previous


def _once(fn):
    """``fn`` called at most once; later calls return the first result (one probe for all of a batch's rows)."""
    done = []

    def call():
        if not done:
            done.append(fn())
        return done[0]
    return call


class _ProbeDone(Exception):
    """Raised by the attention wrapper once a probe has its score: the probe needs no output."""


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
        self.text_model = self.adapter.text_model(model)
        self.text_config = self.adapter.text_config(model)
        self.num_layers = len(self.layers)
        config.check_model(self.num_layers)
        # one (first layer, scorer, positions convention) per stage: a combination has two (PruneConfig.stages)
        self.stages = [_Stage(c.first_layer if i else 0, c.make_scorer(), c.effective_positions(self.adapter.mrope))
                       for i, c in enumerate(config.stages)]
        if any(s.positions == "renumber" for s in self.stages) and self.adapter.mrope:
            raise ValueError(f"positions='renumber' is defined for 1-D RoPE; {type(model).__name__} uses 3-D "
                             "M-RoPE positions, so use positions='original' (or leave it unset)")
        conventions = [s.positions for s in self.stages if s.positions is not None]
        # "renumber+original": a combination whose stages number differently (before stage first)
        self.positions = None if not conventions else conventions[0] if len(set(conventions)) == 1 \
            else "+".join(conventions)
        self.visual_ids = torch.tensor(self.adapter.visual_token_ids(model))
        self._visual_ids_on: Dict[torch.device, torch.Tensor] = {}  # per device: no host copy at every call
        self.attn_modules = []
        for i, layer in enumerate(self.layers):
            mod = getattr(layer, "self_attn", None)
            if mod is None or getattr(mod, "layer_idx", None) != i:
                raise ValueError(f"decoder layer {i} of {type(model).__name__} has no self_attn with layer_idx={i}; "
                                 "this model layout is not supported")
            self.attn_modules.append(mod)
        if not getattr(model, "_can_set_attn_implementation", lambda: True)():
            raise ValueError(f"{type(model).__name__} does not dispatch attention through AttentionInterface")
        self.scorer = self.stages[-1].scorer  # the decoder-side stage's (the only one without a combination)
        self._mask_kind = "bool"  # how this model's attention reads a mask (set by _install)
        self.score_dtype = config.score_dtype or "float32"
        self.stats = PruneStats(
            num_layers=self.num_layers, hidden_size=self.text_config.hidden_size,
            ffn_size=getattr(self.text_config, "intermediate_size", 4 * self.text_config.hidden_size),
            positions=self.positions)
        self._sig = inspect.signature(model.forward)
        self._handles = []
        self._routes = []                     # (attention module, our callback) pairs routed by _install
        self._state: Optional[_Pass] = None   # the pass this model call belongs to (None: not ours to touch)
        self._last: Optional[_Pass] = None    # the latest prefill's pass, whose cache decode steps may extend
        self._generating = 0                  # model.generate calls in progress (_GenerateCalls)
        self._orig_attn: Optional[str] = None
        self.vision: Optional[VisionCapture] = None   # the vision tower's statistic, for needs_vision scorers
        self._per_unit = False                        # whether that scorer splits its budget per image (units)
        self._install()

    def _install(self) -> None:
        orig = self.text_config._attn_implementation or "eager"
        if orig.startswith(attn.PREFIX):
            raise ValueError("this model already has a pruner applied; call .remove() on it first")
        name = attn.ensure_registered(orig)
        self._orig_attn = orig
        mask_fn = ALL_MASK_ATTENTION_FUNCTIONS[orig]
        self._mask_kind = "2d" if mask_fn is flash_attention_mask else "float" if mask_fn is eager_mask else "bool"
        self.model.set_attn_implementation({self.adapter.text_config_key: name})
        if self.text_config._attn_implementation != name:
            self.model.set_attn_implementation({self.adapter.text_config_key: orig})
            raise RuntimeError(f"could not switch the text model's attention to {name!r}")
        m = self.model
        self._handles.append(m.register_forward_pre_hook(self._on_model_call, with_kwargs=True))
        self._handles.append(m.register_forward_hook(self._after_model_call, with_kwargs=True))
        self._handles.append(self.text_model.register_forward_pre_hook(self._on_text_model, with_kwargs=True))
        for i, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_pre_hook(partial(self._on_layer, i), with_kwargs=True))
            cb = partial(self._on_attention, i)
            attn.route(self.attn_modules[i], cb)
            self._routes.append((self.attn_modules[i], cb))
        self._handles += self.adapter.install(self)
        self._handles.append(_GenerateCalls(self))
        reader = next((s.scorer for s, c in zip(self.stages, self.config.stages)
                       if c.prunes and getattr(s.scorer, "needs_vision", False)), None)  # PruneConfig allows one
        if reader is not None:
            try:
                needs = reader.needs_vision
                self.vision = VisionCapture(self.model, self.adapter, needs if isinstance(needs, frozenset) else (),
                                            reader.vision_statistic, reader.extra_vision_layers)
            except Exception:
                self.remove()
                raise
            self._handles.append(self.vision)
            self._per_unit = getattr(reader, "scope", "prompt") == "image"

    def remove(self) -> None:
        """Detach this pruner's hooks and restore the original attention implementation.

        Only what this pruner installed is undone, so calling it again (or on an old pruner after a
        new one was applied to the same model) leaves the newer pruner working.
        """
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for mod, cb in self._routes:
            attn.unroute(mod, cb)
        self._routes.clear()
        if self._orig_attn is not None:
            self.model.set_attn_implementation({self.adapter.text_config_key: self._orig_attn})
            self._orig_attn = None
        self._state = self._last = None

    def __deepcopy__(self, memo):
        # Reached through the hooks when a pruned model is deep-copied: the copy's attention modules would
        # have no route to a pruner, and it would fail later with a misleading error. Refuse it here.
        raise TypeError(
            f"cannot deep-copy a {type(self.model).__name__} while a SequentialPrune pruner is applied to it: "
            "call .remove() on the pruner, copy the model, then apply_pruning(...) to each copy")

    def __reduce_ex__(self, protocol):
        # Reached when a pruned model is pickled (torch.save of the whole model, multiprocessing): the hooks and
        # the routed attention would not survive the trip. Refuse it with what to do instead.
        raise TypeError(
            f"cannot pickle a {type(self.model).__name__} while a SequentialPrune pruner is applied to it: call "
            ".remove() first (or save model.state_dict()), then apply_pruning(...) again after loading")

    def __enter__(self) -> "Pruner":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def kept_positions(self) -> Optional[torch.Tensor]:
        """During a prefill, the (B, n) absolute positions of the tokens present now (None: all of them); a
        batch's padding slots hold their row's last position (a text token)."""
        st = self._state
        return None if st is None or st.decoding else st.kept_abs

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
        raw_pixels = any(a.get(k) is not None for k in self.adapter.pixel_keys)
        has_pixels = raw_pixels or bool(a.get("mm_encoder_outputs"))
        if raw_pixels and self.vision is not None:
            self.vision.new_prompt()  # this forward encodes its own images
        if ids is None and embeds is not None:
            if cfg.prunes:
                raise ValueError("inputs_embeds without input_ids: image tokens are found from input_ids, so pass "
                                 "input_ids (and pixel_values) instead of inputs_embeds")
            self._state = None
            return None
        ids_on = self._visual_ids_on.get(ids.device)
        if ids_on is None:
            ids_on = self._visual_ids_on[ids.device] = self.visual_ids.to(ids.device)
        visual = torch.isin(ids, ids_on)
        if past_len > 0:
            self._start_decode(pkv, ids, visual, has_pixels)
            self._decode_positions(args, kwargs, a, pkv)
            return args, kwargs
        self._start_prefill(ids, visual, has_pixels, a)
        return args, kwargs

    def _arguments(self, args, kwargs) -> dict:
        """The call's arguments by name, with those passed through ``**kwargs`` flattened in."""
        a = dict(self._sig.bind_partial(*args, **kwargs).arguments)
        for name, p in self._sig.parameters.items():
            if p.kind is inspect.Parameter.VAR_KEYWORD and isinstance(a.get(name), dict):
                a.update(a.pop(name))
        return a

    def _start_decode(self, pkv, ids, visual, has_pixels) -> None:
        st = self._last
        ours = st is not None and st.cache is pkv
        self._state = st if ours else None
        # a generated token may happen to carry an image token's id; only a prompt brings images
        generated = ours and ids.shape[1] == 1 and not has_pixels
        if has_pixels or (not generated and bool(visual.any())):  # a generated token costs no host sync
            raise ValueError("image tokens arrived on a non-empty cache (chunked prefill, or continuing from a "
                             "cache with a new image), which is not supported: run the whole prompt with its images "
                             "in one prefill from an empty cache (no prefill_chunk_size)")
        if ours and st.layer_kept:
            if ids.shape[1] != 1:
                raise ValueError("a pruned KV cache can only be extended one token at a time: chunked prefill, "
                                 "assisted/speculative decoding and multi-token continuation are not supported")
            st.decoding = True
            st.gathered.clear()  # the decode mask and positions are new tensors at every step
            return
        if ours:  # an unpruned prefill (no image tokens): nothing to gather
            st.decoding = True
            return
        lengths = {layer.get_seq_length() if hasattr(layer, "get_seq_length") else None for layer in pkv.layers}
        # a pruned cache is tagged (copies keep the tag); at K = 0 its layers are all equally short
        if len(lengths) > 1 or getattr(pkv, _PRUNED_TAG, False):
            raise ValueError("this KV cache was pruned by a prefill that is no longer the latest (a copied "
                             "cache, an earlier prompt's cache, or another generate call's); re-run the prompt")

    def _decode_positions(self, args, kwargs, a: dict, pkv) -> None:
        """Without position ids, the model counts the cache's length, which is layer 0's: when layer 0 itself
        was pruned (K = 0) that count is short, so give the positions an unpruned cache would give."""
        st = self._state
        if st is None or 0 not in st.layer_kept or a.get("position_ids") is not None:
            return
        if self.adapter.mrope:
            if a.get("attention_mask") is None:
                raise ValueError("decoding on a cache pruned at layer 0 needs the attention_mask (or position_ids): "
                                 "M-RoPE positions would otherwise be counted from the pruned cache")
            return  # M-RoPE models count decode positions from the full-length attention mask
        if "position_ids" in list(self._sig.parameters)[:len(args)]:
            return
        ids = a["input_ids"]
        done = pkv.layers[0].get_seq_length() - st.layer_kept[0].shape[1]  # tokens decoded so far
        start = st.prompt_len + done
        kwargs["position_ids"] = torch.arange(start, start + ids.shape[1], device=ids.device).expand(ids.shape[0], -1)

    def _start_prefill(self, ids, visual, has_pixels, call_args) -> None:
        cfg = self.config
        b, length = ids.shape
        counts = visual.sum(dim=1).tolist()
        n = max(counts)
        mask2d = call_args.get("attention_mask")
        if has_pixels and n == 0:
            raise ValueError(
                f"pixel inputs were given but input_ids hold no image token (ids {self.visual_ids.tolist()}); "
                "the prompt must contain the processor's image placeholders (check the model's image_token_id)")
        if cfg.prunes and n > 0:
            if mask2d is not None and mask2d.dim() == 2 and bool((mask2d[:, -1] == 0).any()):
                raise ValueError("right padding puts pad tokens last, but scores come from the last token: use "
                                 "left padding (processor.tokenizer.padding_side = 'left')")
            if bool(visual[:, -1].any()):
                raise ValueError("the prompt ends on an image token, but the last token ranks the others and must "
                                 "stay: put the question or the generation prompt after the image, and run the "
                                 "whole prompt in one prefill (no prefill_chunk_size)")
            last = self._last
            if (cfg.cache_mode == "static" and self._generating and call_args.get("use_cache") is False
                    and last is not None
                    and last.input_ids is not None and last.input_ids.shape[0] == b and last.prompt_len < length
                    and torch.equal(last.input_ids, ids[:, :last.prompt_len].to(last.input_ids.device))):
                raise ValueError("this prompt extends the previous one without a KV cache (generate(use_cache=False)"
                                 "), which re-selects the image tokens at every step: that is cache_mode='recompute'"
                                 "; set it, or generate with the cache")
        plan = self._batch_plan(counts) if (cfg.prunes and n > 0) else {}
        padding = mask2d is not None and mask2d.dim() == 2
        real = mask2d.bool().sum(dim=1).tolist() if padding else [length] * b
        st = _Pass(plan=plan, prompt_len=length, n_image=counts, n_visual=list(counts), n_real=real)
        if plan:
            st.visual = visual
            st.valid = mask2d.bool() if padding else torch.ones_like(visual)
            st.image_rank = (torch.cumsum(visual.long(), dim=1) - 1).masked_fill(~visual, -1)
            for layer in plan:
                if layer > 0:
                    st.need.setdefault(layer - 1, set()).update(self._stage_at(layer).scorer.needs)
            st.input_ids = ids
            st.renumbered = [0] * b
        for stage in self.stages:
            stage.scorer.reset()
        self.stats.reset(counts, real, length)
        self._state = self._last = st

    def _batch_plan(self, counts: List[int]) -> Dict[int, List[int]]:
        """``{layer: image tokens each row keeps entering it}``: every row's own plan (a batch-1 run's), over
        the layers where any row prunes; a row keeps its count through the layers where it does not."""
        plans = [self.config.plan(c) if c > 0 else {} for c in counts]
        current, out = list(counts), {}
        for layer in sorted(set().union(*plans)):
            current = [p.get(layer, c) for p, c in zip(plans, current)]
            out[layer] = list(current)
        return out

    def _after_model_call(self, module, args, kwargs, output):
        st = self._state
        if st is None or st.decoding:
            return None
        missing = sorted(set(range(self.num_layers)) - st.visited)
        if missing:
            raise RuntimeError(f"SequentialPrune: decoder layers {missing} ran without the pruning hooks; "
                               "pruning would silently not apply to this model")
        if st.captured:
            raise RuntimeError(f"SequentialPrune: what layers {sorted(st.captured)} captured for the scorer was "
                               "never used")
        self.stats.prefills += 1
        st.cache = _output_cache(output)
        if st.plan and st.cache is not None:
            setattr(st.cache, _PRUNED_TAG, True)
        st.gathered.clear()
        self._prepare_decode(st)
        return None

    def _prepare_decode(self, st: _Pass) -> None:
        """Key indices each pruned layer holds, relative to layer 0's (which sizes the decode masks)."""
        base = st.layer_kept.get(0)
        for i, kept in st.layer_kept.items():
            if kept is not base:  # a layer holding layer 0's own tokens needs no gather
                st.decode_index[i] = kept if base is None else \
                    relative_index(base, kept, st.prompt_len, st.layer_valid.get(0))

    def _on_text_model(self, module, args, kwargs):
        st = self._state
        if st is None:
            return None
        if not st.decoding:
            if st.plan and any(getattr(s.scorer, "needs_coords", False) for s in self.stages):
                st.coords = self.adapter.coords(CoordsContext(self.model, st.input_ids, st.visual, kwargs))
            if st.plan and self.vision is not None:
                # the images were encoded before this point (by this forward, or by generate before its first)
                st.vision = self.vision.token_scores(st.n_image, st.visual.device)
                if self._per_unit:
                    st.units = self.vision.token_units(st.n_image, st.visual.device)
                if self.vision.needs:
                    st.vision_tokens = self.vision.token_data(st.n_image)
                st.vision_layers = {i: self.vision.token_scores(st.n_image, st.visual.device, layer=i)
                                    for i in self.vision.extra}
            return None
        if 0 not in st.layer_kept:
            return None
        mask = kwargs.get("attention_mask")
        valid = st.layer_valid.get(0)
        if mask is None and valid is not None:
            # padding slots in layer 0 need a mask to hide them: the full-length one an unpadded input implies
            ids = kwargs.get("input_ids")
            q = ids.shape[1] if ids is not None else kwargs["inputs_embeds"].shape[1]
            done = st.cache.layers[0].get_seq_length() - st.layer_kept[0].shape[1]
            mask = torch.ones(valid.shape[0], st.prompt_len + done + q, dtype=torch.long, device=valid.device)
        if mask is not None and mask.dim() == 2:
            # layer 0 holds only its kept prompt tokens, and masks are sized from its cache
            mask = take(mask, decode_key_index(st.layer_kept[0], st.prompt_len, mask.shape[-1]), 1)
            if valid is not None:
                mask = hide_keys(mask, _with_new(valid, mask.shape[-1]))
            kwargs["attention_mask"] = mask
        return args, kwargs

    def _on_layer(self, i: int, module, args, kwargs):
        st = self._state
        if st is None:
            return None
        if st.decoding:
            return self._on_decode_layer(i, args, kwargs, st)
        st.visited.add(i)
        if not st.plan:
            return None
        hidden_in_args = len(args) > 0
        hidden = args[0] if hidden_in_args else kwargs["hidden_states"]
        # every layer receives the same full-length mask, positions and RoPE tables
        full = {k: kwargs.get(k) for k in _PER_TOKEN}
        if i in st.plan:
            self._layer_inputs(kwargs, full, st, hidden.dtype)  # those of the tokens present, for a probe
            hidden = self._prune(i, module, hidden, kwargs, st)
        if st.kept_abs is not None:
            self._layer_inputs(kwargs, full, st, hidden.dtype)
            st.layer_kept[i] = st.kept_abs
            if st.padded:
                st.layer_valid[i] = st.valid
            if st.positions is not None:
                st.layer_shift[i] = tuple(st.renumbered)
        self.stats.set_layer(i, st.n_visual)
        if hidden_in_args:
            return (hidden,) + tuple(args[1:]), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs

    def _layer_inputs(self, kwargs, full: dict, st: _Pass, dtype: torch.dtype) -> None:
        """Set the layer's mask, positions and RoPE tables to those of the tokens present.

        Gathered once per kept set: the layers after a pruning layer share it. Padding slots are hidden as
        keys (a mask is built where the model gave none, as it does for an unpadded batch).
        """
        if st.kept_abs is None:
            kwargs.update({k: v for k, v in full.items() if k in kwargs})
            return
        tag = (id(st.kept_abs),) + tuple(id(v) for v in full.values())
        cached = st.gathered.get("inputs")
        if cached is None or cached[0] != tag:
            out = {}
            for key, fn in (("attention_mask", take_mask), ("position_ids", take_position_ids),
                            ("position_embeddings", take_position_embeddings)):
                if full.get(key) is not None:
                    out[key] = fn(full[key], st.kept_abs)
            if st.padded:
                mask = out.get("attention_mask")
                out["attention_mask"] = hide_keys(mask, st.valid) if mask is not None else \
                    build_mask(self._mask_kind, st.kept_abs, st.kept_abs, st.valid, dtype)
            if st.positions is not None:  # renumbered: new positions, RoPE tables of the model's own rotary
                out["position_ids"] = st.positions
                out["position_embeddings"] = self._rope(full["position_embeddings"][0], st.positions)
            cached = st.gathered["inputs"] = (tag, out)
        kwargs.update(cached[1])

    def _rope(self, like: torch.Tensor, positions: torch.Tensor):
        """cos/sin of the text model's own rotary embedding at ``positions`` (renumbering)."""
        return self.adapter.rotary_embedding(self.model)(like, positions.to(like.device))

    def _on_decode_layer(self, i: int, args, kwargs, st: _Pass):
        idx = st.decode_index.get(i)
        valid = st.layer_valid.get(i)
        mask = kwargs.get("attention_mask")
        if idx is not None and (mask is not None or valid is not None):
            # layers after the last pruning layer share one kept set: gather their mask once per step
            tag = ("mask", id(mask), id(idx))
            if tag not in st.gathered:
                if mask is not None:
                    base_len = st.prompt_len if 0 not in st.layer_kept else st.layer_kept[0].shape[1]
                    mask = take(mask, decode_key_index(idx, base_len, mask.shape[-1]), -1)
                    if valid is not None:
                        mask = hide_keys(mask, _with_new(valid, mask.shape[-1]))
                else:  # no padding in the input, but this layer holds padding slots: they need a mask
                    hidden = args[0] if args else kwargs["hidden_states"]
                    q = hidden.shape[1]
                    keys = _with_new(valid, st.cache.layers[i].get_seq_length() + q)
                    key_pos = torch.zeros_like(keys, dtype=torch.long)  # decode queries see every prompt slot
                    mask = build_mask(self._mask_kind, key_pos[:, :q], key_pos, keys, hidden.dtype)
                st.gathered[tag] = mask
            kwargs["attention_mask"] = st.gathered[tag]
        shift = st.layer_shift.get(i)
        if shift and any(shift):
            pos = kwargs.get("position_ids")
            if pos is None:
                raise RuntimeError("SequentialPrune: renumbered positions need the decoder's position_ids")
            tag = ("rope", id(pos), shift)
            if tag not in st.gathered:
                like = kwargs["position_embeddings"][0]
                delta = torch.tensor(shift, device=pos.device)[:, None] if len(set(shift)) > 1 else shift[0]
                st.gathered[tag] = (pos - delta, self._rope(like, pos - delta))
            kwargs["position_ids"], kwargs["position_embeddings"] = st.gathered[tag]
        return args, kwargs

    def _prune(self, i: int, layer, hidden: torch.Tensor, kwargs, st: _Pass) -> torch.Tensor:
        vis = st.visual
        b, n_cur = vis.shape
        target = [min(k, v) for k, v in zip(st.plan[i], st.n_visual)]
        captured = st.captured.pop(i - 1, {})
        if target == st.n_visual:
            return hidden
        stage = self._stage_at(i)
        for need in stage.scorer.needs:
            if i > 0 and need not in captured:
                raise RuntimeError(
                    f"SequentialPrune: no {need} from layer {i - 1}: the attention wrapper did not run "
                    f"(was the attention implementation changed after apply_pruning?)")
        base = st.kept_abs if st.kept_abs is not None else \
            torch.arange(st.prompt_len, device=vis.device).expand(b, -1)
        valid = st.valid.to(vis.device)
        image_index = st.image_rank.to(vis.device).gather(1, base)
        inp = ScoreInputs(
            layer=i, keep=0, visual=vis, valid=valid, hidden=hidden, image_index=image_index, token_index=base,
            attention=captured.get("attention"), keys=captured.get("keys"), coords=st.coords, vision=st.vision,
            units=st.units,
            vision_tokens=st.vision_tokens, vision_layers=st.vision_layers or None, project=self._projector(),
            probe=_once(partial(self._probe, i, layer, hidden, kwargs)),
            final_norm=self.adapter.final_norm(self.model))
        chosen, replaced, features = self._select(stage.scorer, inp, target, st.n_visual)
        keep = valid & (~vis | chosen)
        if replaced is not None:
            replaced = replaced.to(vis.device) & keep & vis
            hidden = torch.where(replaced[..., None], features.to(hidden.device, hidden.dtype), hidden)
        # each row's kept tokens, right-aligned; a row keeping fewer than the most starts with padding slots,
        # copies of its last token (always a kept text token) that the mask hides
        real = [r - v + t for r, v, t in zip(st.n_real, st.n_visual, target)]
        n_new = max(real)
        rel = torch.sort(keep.to(torch.uint8), dim=1, stable=True).indices[:, n_cur - n_new:]
        pad = None
        if min(real) < n_new:
            short = torch.tensor([n_new - r for r in real], device=vis.device)
            pad = torch.arange(n_new, device=vis.device)[None, :] < short[:, None]
            rel = rel.masked_fill(pad, n_cur - 1)
        if stage.positions == "renumber":
            cur = st.positions if st.positions is not None else kwargs.get("position_ids")
            if cur is None:
                raise RuntimeError("SequentialPrune: positions='renumber' needs the decoder's position_ids")
            cur = cur.to(vis.device).expand(b, -1) if cur.dim() == 2 else cur
            dropped_before = torch.cumsum((valid & ~keep).long(), dim=1)
            st.positions = (cur - dropped_before).gather(1, rel)
            st.renumbered = [d + v - t for d, v, t in zip(st.renumbered, st.n_visual, target)]
        elif st.positions is not None:  # an earlier stage renumbered: the kept tokens keep those positions
            st.positions = st.positions.gather(1, rel)
        st.kept_abs = base.gather(1, rel)
        st.visual = vis.gather(1, rel) if pad is None else vis.gather(1, rel) & ~pad
        st.valid = torch.ones_like(st.visual) if pad is None else ~pad
        st.padded = pad is not None
        st.n_visual, st.n_real = target, real
        k_max = max(target)
        at = _true_positions(st.visual, k_max)
        img = st.image_rank.to(vis.device).gather(1, st.kept_abs.gather(1, at))
        if min(target) < k_max:
            img = img.masked_fill(~st.visual.gather(1, at), -1)
        self.stats.kept_image_indices[i] = img
        if replaced is not None:
            self.stats.merged[i] = replaced.gather(1, rel).gather(1, at) & (img >= 0)
        return take(hidden, rel, 1)

    def _projector(self):
        """``fn(pre-projector features) -> embeddings`` of this family (merging scorers), or None."""
        merge = getattr(self.adapter.vision, "merge", None) if self.vision is not None else None
        return None if merge is None else partial(merge.project, self.model)

    def _stage_at(self, i: int) -> "_Stage":
        """The stage whose scorer and positions convention prune before layer ``i`` (the last one starting at or
        before it)."""
        return next(s for s in reversed(self.stages) if s.first_layer <= i)

    def _select(self, scorer, inp: ScoreInputs, target: List[int], present: List[int]):
        """``(keep, replaced, features)``: (B, n) the image tokens each row keeps, and the slots a merging scorer
        gave new hidden states (None when none did). Rows that prune are scored in one call per kept count, so
        each row's selection is its batch-1 selection; a row that does not prune here keeps all of its own."""
        b = len(target)
        groups: Dict[int, List[int]] = {}
        for r in range(b):
            if target[r] < present[r]:
                groups.setdefault(target[r], []).append(r)
        if len(groups) == 1 and len(next(iter(groups.values()))) == b:
            groups = {target[0]: list(range(b))}
        out = inp.visual.clone()
        replaced = features = None
        for k, rows in groups.items():
            sub = inp if len(rows) == b else inp.subset(rows, k)
            got = scorer.select(replace(sub, keep=k) if sub is inp else sub)
            sel = got.keep if isinstance(got, Selection) else got
            # every row at once: a slice, not an index tensor, whose host-to-device copy would sync a GPU
            idx = slice(None) if len(rows) == b else torch.tensor(rows, device=out.device)
            out[idx] = keep_mask(sel, sub.visual, k, scorer.name)
            if isinstance(got, Selection) and got.replaced is not None:
                if not scorer.merges:
                    raise RuntimeError(f"SequentialPrune: the {scorer.name} scorer replaced hidden states but "
                                       "does not declare merges = True")
                if replaced is None:
                    replaced = torch.zeros_like(out)
                    features = inp.hidden.new_zeros(inp.hidden.shape)
                replaced[idx] = got.replaced.to(out.device)
                features[idx if isinstance(idx, slice) else idx.to(features.device)] = \
                    got.features.to(features.device, features.dtype)
        return out, replaced, features

    def _probe(self, i: int, layer, hidden: torch.Tensor, kwargs) -> torch.Tensor:
        """Layer ``i``'s own last-token attention on ``hidden``: its input norm and attention module run
        on the tokens present, without the cache; the wrapper stops the module once it has the score."""
        st = self._state
        before = st.need.get(i)
        st.need[i] = {"probe"}
        kw = {k: v for k, v in kwargs.items() if k not in ("past_key_values", "past_key_value", "use_cache",
                                                             "output_attentions", "hidden_states")}
        normed = self.adapter.input_norm(layer)(hidden)
        try:
            layer.self_attn(hidden_states=normed, **kw)
        except _ProbeDone:
            pass
        finally:
            if before is None:
                st.need.pop(i, None)
            else:
                st.need[i] = before
        got, st.probe = st.probe, None
        if got is None:
            raise RuntimeError(f"SequentialPrune: the probe of layer {i}'s attention did not reach the wrapper")
        self.stats.scores[i] = got.detach()
        return got

    def _on_attention(self, i: int, module, query, key, attention_mask, kwargs) -> None:
        st = self._state
        if st is None or st.decoding or i not in st.need:
            return
        need = st.need[i]
        if "probe" not in need:
            got = st.captured.setdefault(i, {})
        if "attention" in need or "probe" in need:
            scaling = kwargs.get("scaling", getattr(module, "scaling", None))
            s = attn.last_token_scores(query, key, attention_mask, scaling, self.score_dtype)
            if "probe" in need:
                st.probe = s
                raise _ProbeDone()
            got["attention"] = s
            self.stats.scores[i] = s.detach()
        if "keys" in need:
            got["keys"] = key


def apply_pruning(model: torch.nn.Module, config: PruneConfig) -> Pruner:
    """Start pruning ``model`` with ``config``; returns the :class:`Pruner` (call ``.remove()`` or use ``with``)."""
    return Pruner(model, config)
