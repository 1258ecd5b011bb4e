"""Each scorer's selection against the slow, direct re-implementation of its paper's rule (reference_scorers),
on fixed random inputs: several budgets, batches, multi-segment images."""
import pytest
import torch

from SequentialPrune.testing import reference_scorers as ref
from SequentialPrune.scorers import SCORERS, ScoreInputs

pytestmark = pytest.mark.core  # also run on the oldest supported transformers in CI


def inputs_for(n_text_before=5, n_image=48, n_text_after=9, batch=2, d=24, hkv=2, dk=8, seed=0, keep=10, pad=2):
    g = torch.Generator().manual_seed(seed)
    n = n_text_before + n_image + n_text_after
    visual = torch.zeros(batch, n, dtype=torch.bool)
    visual[:, n_text_before:n_text_before + n_image] = True
    valid = torch.ones(batch, n, dtype=torch.bool)
    valid[1:, :pad] = False  # left padding in the second row
    index = (torch.cumsum(visual.long(), 1) - 1).masked_fill(~visual, -1)
    return ScoreInputs(layer=2, keep=keep, visual=visual, valid=valid, hidden=torch.randn(batch, n, d, generator=g),
                       image_index=index, keys=torch.randn(batch, hkv, n, dk, generator=g))


def kept(mask_row):
    return mask_row.nonzero().flatten().tolist()


@pytest.mark.parametrize("keep", [0, 1, 3, 10, 21, 47, 48])
@pytest.mark.parametrize("pivots", [(4, 4), (2, 3), (0, 2), (3, 0)])
def test_dart_equals_the_slow_rule(keep, pivots):
    inp = inputs_for(keep=keep)
    scorer = SCORERS["dart"](image_pivots=pivots[0], text_pivots=pivots[1])
    norm = torch.nn.LayerNorm(24, elementwise_affine=False)
    inp.final_norm = norm
    got = scorer.select(inp)
    for r in range(2):
        image = kept(inp.visual[r])
        after = [p for p in range(inp.visual.shape[1]) if p > max(image) and bool(inp.valid[r, p])]
        keys = inp.keys[r].transpose(0, 1).reshape(inp.visual.shape[1], -1)
        want = ref.dart(keys, norm(inp.hidden[r]), image, after, keep, *pivots, offset=2 * r)
        assert kept(got[r]) == want and len(want) == keep


@pytest.mark.parametrize("layout", [(5, 48, 9, 16), (35, 576, 20, 128), (35, 576, 20, 64), (14, 256, 12, 48)],
                         ids=["small", "llava-128", "llava-64", "qwen-like"])
@pytest.mark.parametrize("pad", [2, 5, 13])
def test_dart_keeps_the_official_codes_selection_at_its_own_counts(layout, pad):
    """At the official code's own count (the image pivots plus ``budget // pivots`` per pivot: 132 for its
    '128'), the picks equal a re-derivation of the official code, pivot order included; a left-padded row
    makes the same picks."""
    before, n_image, after, budget = layout
    count = ref.dart_official_count(budget)
    # row 1 is left-padded: its prompt starts pad tokens later than row 0's
    inp = inputs_for(n_text_before=before + pad, n_image=n_image, n_text_after=after, keep=count, seed=budget, pad=pad)
    got = SCORERS["dart"]().select(inp)
    for r, start in ((0, 0), (1, pad)):
        keys = inp.keys[r].transpose(0, 1).reshape(inp.visual.shape[1], -1)[start:]
        want = ref.dart_official(keys, inp.hidden[r, start:], before + pad - start, n_image, budget)
        assert len(want) == count
        assert kept(got[r]) == [p + start for p in want], f"row {r}"


def test_dart_at_layer_zero_uses_the_embeddings():
    inp = inputs_for(keep=12)
    inp.keys = None  # layer 0: no previous layer
    got = SCORERS["dart"]().select(inp)
    image = kept(inp.visual[0])
    after = [p for p in range(inp.visual.shape[1]) if p > max(image)]
    assert kept(got[0]) == ref.dart(inp.hidden[0], inp.hidden[0], image, after, 12)


@pytest.mark.parametrize("keep", [1, 2, 5, 17, 48])
def test_divprune_equals_the_slow_rule(keep):
    inp = inputs_for(keep=keep, seed=keep)
    got = SCORERS["divprune"]().select(inp)
    for r in range(2):
        assert kept(got[r]) == ref.divprune(inp.hidden[r], kept(inp.visual[r]), keep)


def test_divprune_picks_the_most_isolated_token_first():
    x = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.98, 0.2]])
    inp = ScoreInputs(layer=0, keep=2, visual=torch.ones(1, 4, dtype=torch.bool), valid=torch.ones(1, 4, dtype=torch.bool),
                      hidden=x[None], image_index=torch.arange(4)[None])
    assert kept(SCORERS["divprune"]().select(inp)[0]) == [0, 2]  # 2 is isolated, then 0 is farthest from it


def grid_inputs(shapes, keep, dropped=()):
    """Image tokens laid out as grids ``shapes`` (rows, cols), 3 text tokens on each side; ``dropped``: image
    indices an earlier layer removed."""
    coords = []
    for s, (h, w) in enumerate(shapes):
        coords += [(s, i, j) for i in range(h) for j in range(w)]
    n_img = len(coords)
    alive = [t for t in range(n_img) if t not in dropped]
    n = 3 + len(alive) + 3
    visual = torch.zeros(1, n, dtype=torch.bool)
    visual[0, 3:3 + len(alive)] = True
    index = torch.full((1, n), -1)
    index[0, 3:3 + len(alive)] = torch.tensor(alive)
    return ScoreInputs(layer=0, keep=keep, visual=visual, valid=torch.ones_like(visual), hidden=torch.zeros(1, n, 4),
                       image_index=index, coords=torch.tensor(coords)[None])


@pytest.mark.parametrize("shapes", [[(24, 24)], [(8, 8)], [(4, 4), (4, 5)], [(4, 4), (4, 4)], [(3, 7)]])
@pytest.mark.parametrize("fraction", [0.05, 0.25, 1 / 3, 0.5, 0.9])
def test_spatial_equals_the_slow_lattice(shapes, fraction):
    total = sum(h * w for h, w in shapes)
    keep = max(1, int(total * fraction))
    inp = grid_inputs(shapes, keep)
    got = SCORERS["spatial"]().select(inp)
    grids, start = [], 3
    for h, w in shapes:
        grids.append((h, w, list(range(start, start + h * w))))
        start += h * w
    assert kept(got[0]) == ref.spatial(grids, keep) and len(kept(got[0])) == keep


def test_spatial_keeps_the_lattice_of_llava_grids():
    got = kept(SCORERS["spatial"]().select(grid_inputs([(24, 24)], 144))[0])
    rows_cols = {((p - 3) // 24, (p - 3) % 24) for p in got}
    assert rows_cols == {(i, j) for i in range(1, 24, 2) for j in range(1, 24, 2)}  # every other row and column
    got = kept(SCORERS["spatial"]().select(grid_inputs([(24, 24)], 64))[0])
    assert {((p - 3) // 24, (p - 3) % 24) for p in got} == {(i, j) for i in range(1, 24, 3) for j in range(1, 24, 3)}


def test_spatial_replaces_tokens_dropped_earlier_by_their_nearest():
    inp = grid_inputs([(8, 8)], 16, dropped={9})  # (1, 1) is a lattice cell of the 4x4 lattice
    got = SCORERS["spatial"]().select(inp)[0]
    idx = inp.image_index[0][got].tolist()
    assert len(idx) == 16 and 9 not in idx and ({1, 8, 10, 17} & set(idx))


def test_engine_hands_scorers_image_index_minus_one_for_text(monkeypatch):
    """ScoreInputs.image_index: the rank among image tokens at image tokens, -1 at every text token (also after
    the image); token_index: each present token's index in the prompt, in order."""
    from tiny_models import build_model, make_inputs
    from SequentialPrune import PruneConfig, apply_pruning

    seen = []
    scorer_cls = SCORERS["random"]
    original = scorer_cls.select
    monkeypatch.setattr(scorer_cls, "select", lambda self, inp: seen.append(inp) or original(self, inp))
    model = build_model("llava")
    inputs = make_inputs("llava", batch=2, suffixes=[7, 4])
    with torch.no_grad(), apply_pruning(model, PruneConfig("random", 0.5, 2, step=0.25)):
        model(**inputs)
    assert len(seen) == 2  # two pruning layers
    for inp in seen:
        text = ~inp.visual
        assert bool((inp.image_index[text] == -1).all())
        ranks = inp.image_index[inp.visual].view(2, -1)
        assert bool((ranks.diff(dim=1) > 0).all()) and int(ranks.max()) <= 63
        for r in range(2):  # padding slots (a padded row's, after the first pruning layer) are not tokens
            assert bool((inp.token_index[r][inp.valid[r]].diff() > 0).all())
    assert inp.token_index.shape[1] < inputs["input_ids"].shape[1]  # the second layer sees the kept tokens only


def test_unit_quotas_split_the_budget_in_proportion_by_largest_remainder():
    from SequentialPrune import PruneConfig
    from SequentialPrune.scorers.base import unit_quotas

    assert unit_quotas([576] * 5, 720) == [144] * 5            # LLaVA-1.5, 5 images at R = 0.75
    assert unit_quotas([576] * 5, 288) == [58, 58, 58, 57, 57]  # 57.6 each: the first three get the extra ones
    assert unit_quotas([16, 16], 9) == [5, 4]                  # a tie: the earlier unit
    assert unit_quotas([10, 30], 8) == [2, 6] and unit_quotas([3, 5], 20) == [3, 5]  # never above a unit's size
    with pytest.raises(ValueError, match="scope must be one of"):
        PruneConfig("fastervlm", options={"scope": "crop"})
