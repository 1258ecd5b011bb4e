"""An independent masked reference for pruning (``masked_reference``).

The reference never removes a token. It runs the full sequence with eager
attention and, from each pruning layer on, masks every dropped image token out
of attention as a key. Which tokens it drops it decides itself, with the slow
selection rules of ``reference_scorers.py``, from what eager attention and the
full-length hidden states show:

- ``attention``: the eager attention weights of the previous layer (last row,
  mean over heads, in float32 or in the model's dtype);
- ``pdrop``: the eager attention weights of the pruning layer itself, run once
  on the hidden states entering it with the drops made so far;
- ``dart``: the previous layer's keys and the final norm of the hidden states;
- ``divprune`` / ``spatial``: the hidden states entering the layer / the test's
  own description of the image grids; ``random``: a twin of the seeded stream
  (one per row);
- ``vision_attention``: the test's own vision-tower score of each image token
  (``vision``: ``fn(row) -> one score per prompt image token``);
- ``vispruner``: those scores and the test's own pre-projector features of each image token
  (``vision_features``: ``fn(row) -> (N, C)``), through ``reference_vision.vispruner``;
- ``hiprune``: the test's own deep (``vision``) and object-layer (``vision_object``) scores and its image grids,
  through ``reference_vision.hiprune_segments``;
- ``cdpruner``: the hidden states entering the layer (at K = 0 the input embeddings): the image tokens' through
  ``reference_vision.cdpruner``, with relevance (``cdpruner_relevance``) to the text tokens after the last
  image token.

Physical removal must match it: masked keys get zero probability, so the kept
tokens see exactly what they would see without the dropped ones. With
renumbered positions the reference gives every layer RoPE tables of the
renumbered positions (``original - tokens dropped before``), computed by the
model's own rotary embedding.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Optional

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

from . import reference_scorers as ref
from . import reference_vision as rv

NAME = "seqprune_test_masked_reference"
_ACTIVE = {}


def _reference_attention(module, query, key, value, attention_mask, **kwargs):
    eager = sys.modules[type(module).__module__].eager_attention_forward
    r = _ACTIVE.get(id(module))
    if r is None:
        return eager(module, query, key, value, attention_mask, **kwargs)
    return r.attend(eager, module, query, key, value, attention_mask, kwargs)


AttentionInterface.register(NAME, _reference_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


def _head_mean(weights: torch.Tensor, precision: str) -> torch.Tensor:
    row = weights[:, :, -1, :]
    return row.mean(dim=1).float() if precision == "model" else row.float().mean(dim=1)


class MaskedReference:
    """Masked-reference pruning for one prompt batch; ``plan`` = {layer: image tokens kept entering it}."""

    def __init__(self, model, visual_ids, plan, scorer="attention", *, precision="float32", renumber=False,
                 seed=0, options=None, grids: Optional[Callable] = None, vision: Optional[Callable] = None,
                 vision_features: Optional[Callable] = None, vision_object: Optional[Callable] = None,
                 units: Optional[Callable] = None):
        self.model, self.plan, self.scorer = model, plan, scorer
        self.visual_ids = torch.tensor(visual_ids)
        self.precision, self.renumber, self.seed = precision, renumber, seed
        self.options = dict(options or {})
        self.grids = grids  # fn(row) -> [(rows, cols, [image indices in row-major order])]
        self.vision = vision  # fn(row) -> [vision score of each prompt image token]
        self.vision_features = vision_features  # fn(row) -> (N, C) pre-projector feature of each image token
        self.vision_object = vision_object  # fn(row) -> [object-layer score of each prompt image token]
        self.units = units  # fn(row) -> [vision-encoder input (image, crop, tile) of each prompt image token; -1]
        self.kept_image_indices = {}

    # ---------------------------------------------------------------- prompt
    def start(self, input_ids):
        self.visual = torch.isin(input_ids, self.visual_ids.to(input_ids.device))
        self.dropped = torch.zeros_like(self.visual)
        self.layer_dropped, self.kept_image_indices = {}, {}
        self.weights, self.keys, self.probe = {}, {}, None
        self.gens = {}

    def on_layer(self, i, layer, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        prefill = hidden.shape[1] > 1
        original = kwargs.get("position_ids")
        if prefill:
            self._renumber(hidden, kwargs, original, self.dropped, prefill)  # what a probe of this layer sees
            if i in self.plan:
                self._select(i, layer, hidden, kwargs)
            self.layer_dropped[i] = self.dropped.clone()
        self._renumber(hidden, kwargs, original, self.layer_dropped[i], prefill)
        return args, kwargs

    def _renumber(self, hidden, kwargs, pos, drop, prefill):
        """RoPE tables of the positions ``original - tokens dropped before`` (renumbering only)."""
        if not self.renumber:
            return
        if prefill:
            new = pos - torch.cumsum(drop.long(), dim=1) * (~drop).long()
        else:
            new = pos - drop.sum(dim=1, keepdim=True)
        kwargs["position_ids"] = new
        kwargs["position_embeddings"] = self.model.model.language_model.rotary_emb(hidden, new)

    def _select(self, i, layer, hidden, kwargs):
        alive = self.visual & ~self.dropped
        b = alive.shape[0]
        for r in range(b):
            pos = alive[r].nonzero().flatten().tolist()
            k = min(self.plan[i], len(pos))
            if k == len(pos):
                continue
            keep = self._row_keep(i, r, layer, hidden, kwargs, pos, k)
            for p in pos:
                if p not in keep:
                    self.dropped[r, p] = True
        rank = torch.cumsum(self.visual.long(), 1) - 1
        kept = self.visual & ~self.dropped
        self.kept_image_indices[i] = rank[kept].view(b, -1)

    def _row_keep(self, i, r, layer, hidden, kwargs, pos, k):
        s = self.scorer
        if s == "attention":
            return ref.by_score(self.weights[i - 1][r], pos, k)
        if s == "random":
            # each row its own stream, one draw per token present (padding left out), as a row alone gets
            valid = self.mask2d[r] if self.mask2d is not None else torch.ones_like(self.visual[r])
            present = ~self.dropped[r] & valid
            gen = self.gens.setdefault(r, torch.Generator().manual_seed(self.seed))
            full = torch.full(present.shape, float("-inf"))  # the CPU generator's draws, as the engine's
            full[present.cpu()] = torch.rand(int(present.sum()), generator=gen)
            return ref.by_score(full, pos, k)
        if s == "pdrop":
            if r == 0:
                self._probe(i, layer, hidden, kwargs)
            return ref.by_score(self.probe[r], pos, k)
        if s == "dart":
            keys = self.keys[i - 1] if i > 0 else None
            kk = keys[r].transpose(0, 1).reshape(keys.shape[2], -1) if keys is not None else hidden[r]
            feats = self.model.model.language_model.norm(hidden[r:r + 1])[0]
            present = (~self.dropped[r]).nonzero().flatten().tolist()
            last_img = max(pos)
            valid = self.mask2d[r] if self.mask2d is not None else torch.ones_like(self.visual[r])
            text_after = [p for p in present if p > last_img and not self.visual[r, p] and bool(valid[p])]
            return ref.dart(kk, feats, pos, text_after, k, self.options.get("image_pivots", 4),
                            self.options.get("text_pivots", 4), offset=int(valid.nonzero()[0]))
        if s == "divprune":
            return ref.divprune(hidden[r], pos, k)
        if s == "spatial":
            index_of = {int(t): p for p, t in zip(pos, (torch.cumsum(self.visual[r].long(), 0) - 1)[pos])}
            grids = [(h, w, [index_of[t] for t in cells]) for h, w, cells in self.grids(r)]
            return ref.spatial(grids, k)
        if s == "vision_attention":
            if self.vision is None:
                raise ValueError("the vision_attention reference needs the test's own vision scores (vision=...)")
            rank = torch.cumsum(self.visual[r].long(), 0) - 1
            scores = self.vision(r)
            by_pos = {p: float(scores[int(rank[p])]) for p in pos}
            kept = []
            for group, q in self._unit_groups(r, [int(rank[p]) for p in pos], k):
                kept += ref.by_score(by_pos, [pos[j] for j in group], q)
            return sorted(kept)
        if s == "vispruner":
            if self.vision is None or self.vision_features is None:
                raise ValueError("the vispruner reference needs the test's own vision scores and features")
            rank = (torch.cumsum(self.visual[r].long(), 0) - 1)[pos].tolist()
            scores, feats = self.vision(r), self.vision_features(r)
            # a token with a NaN feature has no vision-tower patch (a newline): no candidate; such tokens fill,
            # in position order, only a budget beyond the candidates
            cand = [j for j, t in enumerate(rank) if not bool(torch.isnan(feats[t]).any())]
            fill = [j for j in range(len(rank)) if j not in set(cand)][:max(0, k - len(cand))]
            kept = set()
            for group, q in self._unit_groups(r, [rank[j] for j in cand], min(k, len(cand))):
                members = [cand[i] for i in group]
                got = rv.vispruner([scores[rank[j]] for j in members], feats[[rank[j] for j in members]], q,
                                   self.options.get("important_ratio", 0.5), self.options.get("per_round", 8))
                kept |= {pos[members[j]] for j in got}
            return kept | {pos[j] for j in fill}
        if s == "cdpruner":
            valid = self.mask2d[r] if self.mask2d is not None else torch.ones_like(self.visual[r])
            text = [p for p in range(self.visual.shape[1]) if p > max(pos) and bool(valid[p]) and
                    not self.visual[r, p] and not self.dropped[r, p]]
            if not text:
                text = [p for p in range(self.visual.shape[1]) if bool(valid[p]) and not self.visual[r, p]]
            feats = hidden[r, pos].double()
            rel = rv.cdpruner_relevance(feats, hidden[r, text].double())
            got = rv.cdpruner(feats, rel.tolist(), k, self.options.get("theta"))
            return {pos[j] for j in got}
        if s == "hiprune":
            rank = (torch.cumsum(self.visual[r].long(), 0) - 1)[pos].tolist()
            at = {t: j for j, t in enumerate(rank)}
            grids = [(h, w, [at[t] for t in cells if t in at]) for h, w, cells in self.grids(r)]
            shallow, deep = self.vision_object(r), self.vision(r)
            alpha = self.options.get("alpha", 0.1)
            if self.options.get("scope", "image") == "prompt":
                got = rv.hiprune_segments([shallow[t] for t in rank], [deep[t] for t in rank], k, grids, alpha)
                return {pos[j] for j in got}
            kept = set()
            unit_of = [self.units(r)[t] for t in rank] if self.units is not None else None
            for group, q in self._unit_groups(r, rank, k):
                if unit_of[group[0]] < 0:  # no unit (newlines): the deep layer's top, as registers
                    kept |= set(ref.by_score({j: deep[rank[j]] for j in group}, group, q))
                    continue
                # the unit's own grid: the cells of its one grid that belong to it, row by row
                at = {j: i for i, j in enumerate(group)}
                (h, w, cells), = [(h, w, c) for h, w, c in grids if any(j in at for j in c)]
                mine = [j for j in cells if j in at]
                got = rv.hiprune_segments([shallow[rank[j]] for j in group], [deep[rank[j]] for j in group], q,
                                          [(h, len(mine) // h, [at[j] for j in mine])], alpha)
                kept |= {group[i] for i in got}
            return {pos[j] for j in kept}
        raise ValueError(s)

    def _unit_groups(self, r, tokens, k):
        """``[(indices into tokens, count)]``: ``tokens`` (prompt image-token indices of row ``r``) split per
        vision-encoder input with each unit's share of ``k`` (``scope="image"``, the default), or one group."""
        if self.options.get("scope", "image") == "prompt":
            return [(list(range(len(tokens))), k)]
        if self.units is None:
            raise ValueError(f"the {self.scorer} reference splits the budget per image: it needs the test's own "
                             "units (units=...)")
        unit_of = [self.units(r)[t] for t in tokens]
        return [([i for i, v in enumerate(unit_of) if v == u], q)
                for u, q in ref.unit_shares(unit_of, k).items() if q > 0]

    def _probe(self, i, layer, hidden, kwargs):
        """This layer's own eager attention on the tokens not yet dropped."""
        self._probing = True
        kw = {k: v for k, v in kwargs.items() if k not in ("past_key_values", "use_cache")}
        try:
            layer.self_attn(hidden_states=layer.input_layernorm(hidden), **kw)
        finally:
            self._probing = False

    # ---------------------------------------------------------------- attention
    def attend(self, eager, module, query, key, value, mask, kwargs):
        i = module.layer_idx
        prefill = query.shape[2] > 1
        drop = self.dropped if getattr(self, "_probing", False) else self.layer_dropped.get(i)
        b, kv = key.shape[0], key.shape[2]
        if mask is None:
            mask = torch.zeros(b, 1, query.shape[2], kv, dtype=query.dtype, device=query.device)
            if prefill:
                mask = mask.masked_fill(torch.ones(query.shape[2], kv, dtype=torch.bool, device=query.device).triu(1),
                                        torch.finfo(query.dtype).min)
        mask = mask[..., :kv].expand(b, -1, -1, -1).clone()
        if drop is not None and drop.any():
            cols = torch.zeros(b, kv, dtype=torch.bool, device=mask.device)
            cols[:, :drop.shape[1]] = drop
            mask = mask.masked_fill(cols[:, None, None, :], torch.finfo(mask.dtype).min)
        out, weights = eager(module, query, key, value, mask, **kwargs)
        if getattr(self, "_probing", False):
            self.probe = _head_mean(weights, self.precision)
        elif prefill:
            self.weights[i] = _head_mean(weights, self.precision)
            self.keys[i] = key
        return out, weights


@contextmanager
def masked_reference(model, plan, visual_ids, scorer="attention", **kw):
    """Run ``model`` as the masked reference of ``plan`` inside the block.

    Every forward on an empty cache starts a new prompt.
    """
    text_cfg = model.config.text_config
    orig = text_cfg._attn_implementation
    layers = model.model.language_model.layers
    r = MaskedReference(model, visual_ids, plan, scorer, **kw)
    model.set_attn_implementation({"text_config": NAME})
    for layer in layers:
        _ACTIVE[id(layer.self_attn)] = r

    def on_call(module, args, kwargs):
        pkv = kwargs.get("past_key_values")
        if pkv is None or pkv.get_seq_length() == 0:
            r.start(kwargs["input_ids"] if "input_ids" in kwargs else args[0])
            m = kwargs.get("attention_mask")
            r.mask2d = m.bool() if m is not None and m.dim() == 2 else None

    handles = [model.register_forward_pre_hook(on_call, with_kwargs=True)]
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(
            lambda mod, args, kwargs, i=i: r.on_layer(i, mod, args, kwargs), with_kwargs=True))
    try:
        yield r
    finally:
        for h in handles:
            h.remove()
        for layer in layers:
            _ACTIVE.pop(id(layer.self_attn), None)
        model.set_attn_implementation({"text_config": orig})


# ---------------------------------------------------------------------------------------------------- merging
def _text_model_calls(model, run):
    """The keyword arguments of every text-model call made by ``run()`` (unpruned: the stock ones)."""
    lm = model.model.language_model
    calls = []
    h = lm.register_forward_pre_hook(lambda mod, args, kwargs: calls.append(dict(kwargs)), with_kwargs=True)
    try:
        run()
    finally:
        h.remove()
    return calls


def merge_reference(model, inputs, kept, merged, renumber, new_tokens, visual_ids, then=None):
    """The merge oracle for ONE prompt: the unpruned language model fed the reduced sequence, built here from
    the stock model's own inputs to its text model.

    ``kept``: the prompt image tokens kept (indices among them, any order); ``merged``: ``{image index: (D,)
    embedding}`` for the kept slots whose embedding a merge replaced. The reduced sequence is the stock
    ``inputs_embeds`` (image features scattered by the model) at the text tokens and the kept image tokens,
    with the merged embeddings written into their slots; positions are ``0..L'-1`` (``renumber``) or the stock
    ones gathered at the kept tokens (1-D or M-RoPE); Qwen3-VL's DeepStack features are gathered at the kept
    image tokens. Decoding feeds each greedy token's embedding at the position the unpruned model's own
    decoding uses at that step (renumbered: ``L' + step``). Returns (last prompt logits (V,), tokens (new,),
    step logits (new, V)).

    ``then``: a decoder-side stage run on the reduced sequence (a combination, ``PruneConfig(before=...)``):
    ``dict(plan=..., scorer=..., **masked_reference options)``, the plan of the reduced sequence's N' image
    tokens; the reduced run is then the masked reference of that plan (the language model fed the reduced
    sequence, the decoder-side method's drops masked), and a 4th element is returned: that stage's picks,
    ``{layer: (1, kept) tensor}`` of indices among the prompt's image tokens (as ``stats.kept_image_indices``)."""
    from transformers import DynamicCache
    ids = inputs["input_ids"]
    assert ids.shape[0] == 1, "the merge oracle takes one prompt"
    prompt = _text_model_calls(model, lambda: model(**inputs))[0]
    decode = [c for c in _text_model_calls(model, lambda: model.generate(
        **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False))[1:]]
    visual = torch.isin(ids[0], torch.tensor(visual_ids, device=ids.device))
    image_pos = visual.nonzero().flatten()
    keep_tok = ~visual
    keep_tok[image_pos[sorted(kept)]] = True
    at = keep_tok.nonzero().flatten()
    embeds = prompt["inputs_embeds"][:, at].clone()
    rank = torch.cumsum(visual.long(), 0) - 1
    for idx, emb in merged.items():
        slot = int((at == image_pos[idx]).nonzero())
        embeds[0, slot] = emb.to(embeds)
    n = at.numel()
    pos = prompt.get("position_ids")
    if pos is None:  # the text model counts 0..L-1 itself
        pos = torch.arange(ids.shape[1], device=ids.device)[None]
    pos = torch.arange(n, device=ids.device)[None] if renumber else pos[..., at.to(pos.device)]
    extra = {}
    if prompt.get("deepstack_visual_embeds") is not None:
        keep_img = rank[at][visual[at]]
        extra = dict(visual_pos_masks=visual[at][None],
                     deepstack_visual_embeds=[d[keep_img] for d in prompt["deepstack_visual_embeds"]])
    lm, head = model.model.language_model, model.lm_head
    cache = DynamicCache()
    if then is None:
        return _reduced_run(model, lm, head, cache, embeds, pos, extra, new_tokens, decode, renumber, n, ids)
    then = dict(then)
    plan, scorer = then.pop("plan"), then.pop("scorer", "attention")
    with masked_reference(model, plan, visual_ids, scorer, **then) as r:
        r.start(ids[:, at])  # the reduced sequence's image tokens (no forward of the whole model runs here)
        r.mask2d = None
        got = _reduced_run(model, lm, head, cache, embeds, pos, extra, new_tokens, decode, renumber, n, ids)
    order = torch.tensor(sorted(kept))  # reduced image token j is the prompt's image token order[j]
    return got + ({i: order[t.cpu()] for i, t in r.kept_image_indices.items()},)


def _reduced_run(model, lm, head, cache, embeds, pos, extra, new_tokens, decode, renumber, n, ids):
    """The language model on the reduced sequence, then greedy decoding on its cache."""
    with torch.no_grad():
        out = lm(inputs_embeds=embeds, position_ids=pos, past_key_values=cache, use_cache=True, **extra)
        logits = head(out.last_hidden_state[:, -1])
        last, tokens, steps = logits[0], [], []
        for s in range(new_tokens):
            tok = logits.argmax(-1)
            tokens.append(int(tok))
            steps.append(logits[0])
            if s == new_tokens - 1:
                break
            p = decode[s].get("position_ids")
            if renumber or p is None:
                p = torch.full((1, 1), (n if renumber else ids.shape[1]) + s, device=ids.device)
            out = lm(inputs_embeds=model.get_input_embeddings()(tok[:, None]), position_ids=p,
                     past_key_values=cache, use_cache=True)
            logits = head(out.last_hidden_state[:, -1])
    return last, torch.tensor(tokens), torch.stack(steps)
