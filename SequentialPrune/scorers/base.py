"""The scorer interface: what a scorer sees at a pruning layer, and what it returns."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

SCORERS: Dict[str, type] = {}


def register_scorer(name: str):
    """Class decorator adding a scorer to the registry under ``name``."""
    def deco(cls):
        cls.name = name
        SCORERS[name] = cls
        return cls
    return deco


@dataclass
class ScoreInputs:
    """What a scorer may read when layer ``layer`` prunes to ``keep`` image tokens per row.

    Every tensor covers the ``n`` tokens present before this layer prunes (text
    included), in prompt order, for each of the ``B`` rows. In a batch, rows that keep different counts are
    scored in separate calls (one per count), each with the rows it covers; ``rows`` names them.
    """
    layer: int
    keep: int
    visual: torch.Tensor                         # (B, n) bool: image/video tokens
    valid: torch.Tensor                          # (B, n) bool: False for padding (always on the left)
    hidden: torch.Tensor                         # (B, n, D) hidden states entering the layer
    image_index: torch.Tensor                    # (B, n) index among the prompt's image tokens, -1 for text
    token_index: Optional[torch.Tensor] = None   # (B, n) index in the prompt as given (padding slots after a
                                                 # pruning layer: the row's last token's); None: arange(n)
    attention: Optional[torch.Tensor] = None     # (B, n) last-token attention of layer-1 (needs "attention")
    keys: Optional[torch.Tensor] = None          # (B, Hkv, n, d) keys of layer-1 after RoPE (needs "keys")
    coords: Optional[torch.Tensor] = None        # (B, N, 3) (segment, row, col) of the prompt's N image tokens;
                                                 # a row with fewer is padded with -1 rows
    vision: Optional[torch.Tensor] = None        # (B, N) vision-tower score of the prompt's N image tokens
                                                 # (needs_vision); -inf beyond a row's own N
    units: Optional[torch.Tensor] = None         # (B, N) long: the vision-encoder input (image, crop, tile) of
                                                 # each prompt image token (needs_vision; -1: none, or beyond N)
    vision_layers: Optional[Dict[int, torch.Tensor]] = None  # vision layer -> (B, N) scores there, for the
                                                 # extra layers the scorer's ``extra_vision_layers`` names
    vision_tokens: Optional[List[dict]] = None   # per row, what merging scorers read of the vision tower
                                                 # (``VisionCapture.token_data``: keys, features, cls)
    project: Optional[Callable[[torch.Tensor], torch.Tensor]] = None  # pre-projector features -> embeddings
    probe: Optional[Callable[[], torch.Tensor]] = None   # (B, n) this layer's own last-token attention
    final_norm: Optional[Callable[[torch.Tensor], torch.Tensor]] = None  # the decoder's final norm
    rows: Optional[Tuple[int, ...]] = None       # the batch rows these are (per-row state keys); None: 0..B-1

    def subset(self, rows: Sequence[int], keep: int) -> "ScoreInputs":
        """The inputs of ``rows`` of the batch only, to keep ``keep`` image tokens each."""
        rows = tuple(rows)
        idx = torch.tensor(rows, device=self.visual.device)
        pick = lambda t: None if t is None else t[idx.to(t.device)]  # noqa: E731
        probe = self.probe
        return replace(
            self, keep=keep, visual=pick(self.visual), valid=pick(self.valid), hidden=pick(self.hidden),
            image_index=pick(self.image_index), token_index=pick(self.token_index), attention=pick(self.attention),
            keys=pick(self.keys), coords=pick(self.coords), vision=pick(self.vision), units=pick(self.units),
            vision_tokens=None if self.vision_tokens is None else [self.vision_tokens[r] for r in rows],
            vision_layers=None if self.vision_layers is None else {i: pick(v) for i, v in self.vision_layers.items()},
            probe=None if probe is None else (lambda: pick(probe())),
            rows=tuple(self.rows[r] for r in rows) if self.rows is not None else rows)


def unit_quotas(sizes: Sequence[int], keep: int) -> List[int]:
    """``keep`` tokens split over units of ``sizes`` tokens in proportion to their sizes: each unit its floor
    share, the rest one each to the largest remainders (the earlier unit on a tie); at most ``sum(sizes)``."""
    total = sum(sizes)
    keep = min(keep, total)
    if total == 0:
        return [0] * len(sizes)
    base = [keep * n // total for n in sizes]
    by_remainder = sorted(range(len(sizes)), key=lambda u: -(keep * sizes[u] % total))  # sort is stable
    for u in by_remainder[:keep - sum(base)]:
        base[u] += 1
    return base


SCOPES = ("image", "prompt")


def check_scope(scope: str) -> None:
    """The ``scope`` option of the vision-side scorers: ``"image"``, a budget per vision-encoder input (the
    official code's), or ``"prompt"``, one pool for all images of a prompt."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES} (a budget per vision-encoder input, or one pool per "
                         f"prompt), got {scope!r}")


def unit_split(units: Optional[torch.Tensor], keep: int) -> List[Tuple[torch.Tensor, int]]:
    """``[(positions, count)]``: the ``m`` candidates of ``units`` ((m,) long, their vision-encoder inputs) grouped
    by unit, each with its :func:`unit_quotas` share of ``keep``; candidates of no unit (-1) last, with what the
    units cannot hold. ``units`` None: one pool, ``[(None, keep)]`` (None: every candidate)."""
    if units is None:
        return [(None, keep)]
    units = units.cpu()
    ids = sorted(set(units[units >= 0].tolist()))
    groups = [(units == u).nonzero().flatten() for u in ids]
    quotas = unit_quotas([g.numel() for g in groups], keep)
    out = list(zip(groups, quotas))
    none = (units < 0).nonzero().flatten()
    if none.numel():
        out.append((none, min(keep - sum(quotas), none.numel())))
    return [(g, q) for g, q in out if q > 0]


def row_units(inp: "ScoreInputs", r: int, at: torch.Tensor, scope: str) -> Optional[torch.Tensor]:
    """The units of row ``r``'s prompt image tokens ``at`` (indices among them) for :func:`unit_split`: None
    (one pool) under ``scope="prompt"`` or where the family gave no units."""
    return None if scope == "prompt" or inp.units is None else inp.units[r, at.to(inp.units.device)]


def keep_per_unit(scores: torch.Tensor, candidates: torch.Tensor, units: torch.Tensor, keep: int) -> torch.Tensor:
    """(n,) bool: ``keep`` of the ``candidates`` (n,) bool, each unit of ``units`` (n,) long keeping its
    :func:`unit_split` share of them by highest ``scores`` (the earlier token on a tie)."""
    out = torch.zeros_like(candidates)
    cand = candidates.nonzero().flatten()
    for sub, q in unit_split(units[cand], keep):
        at = cand if sub is None else cand[sub.to(cand.device)]
        out[at[torch.sort(scores[at].float(), descending=True, stable=True).indices[:q]]] = True
    return out


@dataclass
class Selection:
    """A merging scorer's answer: the kept image tokens (``keep``: scores or a bool mask, as ``select`` may
    return), and new hidden states for some kept slots (``replaced`` (B, n) bool, ``features`` (B, n, D): rows
    outside ``replaced`` are ignored). The engine writes them into those slots as it prunes; a replaced slot is
    a kept token like any other (positions, cache, stats)."""
    keep: torch.Tensor
    replaced: Optional[torch.Tensor] = None
    features: Optional[torch.Tensor] = None


def keep_mask(selection: torch.Tensor, visual: torch.Tensor, keep: int, scorer: str = "scorer") -> torch.Tensor:
    """The (B, n) bool mask of the image tokens a scorer's ``select`` keeps, its contract checked.

    ``selection`` is what ``select`` returned for ``visual`` (B, n): float scores, of which the ``keep``
    highest image tokens per row stay (ties go to the earlier token, on every device), or a bool keep mask
    with exactly ``keep`` image tokens set per row. Anything else raises, naming ``scorer``: a scorer that
    breaks the contract would otherwise desynchronise the schedule and the tokens present.
    """
    b, n = visual.shape
    if selection.dtype == torch.bool:
        keep_vis = selection.to(visual.device) & visual
        if bool((keep_vis.sum(dim=1) != keep).any()):
            raise RuntimeError(f"SequentialPrune: the {scorer} scorer kept "
                               f"{keep_vis.sum(dim=1).tolist()} image tokens, the schedule asks for {keep}")
        return keep_vis
    if selection.shape != (b, n):
        raise RuntimeError(f"SequentialPrune: the {scorer} scorer gave scores of shape "
                           f"{tuple(selection.shape)}, expected {(b, n)}")
    s = selection.to(visual.device, torch.float32).masked_fill(~visual, float("-inf"))
    top = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :keep]
    return torch.zeros_like(visual).scatter(1, top, True)


@dataclass
class Scorer:
    """Base scorer. Subclass fields are its options (``PruneConfig(options=...)``).

    ``select`` returns either float scores (B, n), of which the engine keeps the
    ``keep`` highest image tokens per row (ties go to the earlier token), or a
    bool keep mask (B, n) with exactly ``keep`` image tokens set per row
    (:func:`keep_mask` turns either into the kept image tokens and checks it).
    """
    needs = frozenset()          # "attention" / "keys": computed by the layer BEFORE the pruning layer
    needs_vision = False         # ScoreInputs.vision: the vision tower's own attention (vision_capture.py); a
                                 # frozenset of "keys" / "features" / "cls" asks for ScoreInputs.vision_tokens too
    merges = False               # select may return a Selection with replaced slots (only before the decoder)
    vision_statistic = None      # "received": the attention each token receives even on towers with CLS
    needs_coords = False         # ScoreInputs.coords: the (segment, row, col) of each image token
    uses_score_dtype = False     # the attention score's precision applies (PruneConfig.score_dtype)
    uses_seed = False            # PruneConfig.seed applies

    def extra_vision_layers(self, n_layers: int, has_cls: bool = True) -> Tuple[int, ...]:
        """0-based indices of the vision tower's layers (of ``n_layers``; ``has_cls``: whether it has a CLS token)
        whose statistic ``ScoreInputs.vision_layers`` should hold besides the select layer's (needs_vision
        scorers)."""
        return ()

    def reset(self) -> None:
        """Called at the start of every prefill."""

    def select(self, inp: ScoreInputs) -> torch.Tensor:
        raise NotImplementedError


def top_by_order(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest values of a 1-D tensor; ties go to the lower index."""
    return torch.sort(values, descending=True, stable=True).indices[:k]


def keep_mask_from_rows(shape, rows: List[torch.Tensor], device) -> torch.Tensor:
    """A (B, n) bool mask with ``rows[b]`` (token positions) set in row b."""
    mask = torch.zeros(shape, dtype=torch.bool, device=device)
    for b, idx in enumerate(rows):
        if idx.numel():
            mask[b, idx.to(device)] = True
    return mask


def pool_split(pool: Optional[torch.Tensor], n: int, keep: int) -> Tuple[torch.Tensor, int, torch.Tensor]:
    """A merging or feature scorer's candidates among a row's ``n`` image tokens: ``(candidates, their share of
    keep, the others kept too)``. Candidates are the ``pool`` tokens (every token when ``pool`` is None; LLaVA-NeXT
    / OneVision newline tokens, which no tower patch made, are outside it); when ``keep`` exceeds them, the first
    others in position order fill the rest."""
    if pool is None:
        return torch.arange(n), keep, torch.zeros(0, dtype=torch.long)
    pool = pool.cpu().bool()
    cand, other = pool.nonzero().flatten(), (~pool).nonzero().flatten()
    k = min(keep, cand.numel())
    return cand, k, other[:keep - k]
