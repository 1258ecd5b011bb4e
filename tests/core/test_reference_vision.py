"""Hand-checked cases for the slow vision-method references (SequentialPrune.testing.reference_vision), so that
the references themselves can be trusted when the engine's vision-side methods are compared against them."""
import math

import pytest
import torch

from SequentialPrune.testing import reference_vision as rv

pytestmark = pytest.mark.core


def e(i, n=10):
    v = torch.zeros(n, dtype=torch.float64)
    v[i] = 1.0
    return v


def cls_rows(rows):
    """(H, T, T) attention whose CLS row (query 0) of head h is rows[h] (T values); other rows uniform."""
    h, t = len(rows), len(rows[0])
    attn = torch.full((h, t, t), 1.0 / t, dtype=torch.float64)
    for hh, row in enumerate(rows):
        attn[hh, 0] = torch.tensor(row, dtype=torch.float64)
    return attn


# ---------------------------------------------------------------------------------------------- scores


def test_cls_attention_and_fastervlm():
    attn = cls_rows([[0.0, 0.1, 0.4, 0.2, 0.3], [0.0, 0.3, 0.2, 0.1, 0.4]])
    assert rv.cls_attention(attn) == pytest.approx([0.2, 0.3, 0.15, 0.35])  # head mean, CLS column dropped
    assert rv.cls_attention(attn, "sum") == pytest.approx([0.4, 0.6, 0.3, 0.7])
    assert rv.fastervlm(attn[:, 0, 1:], keep=2) == [1, 3]  # patches 3 (0.35) and 1 (0.3), in position order
    assert rv.fastervlm(attn[:, 0, 1:], keep=4) == [0, 1, 2, 3]
    assert rv.fastervlm(torch.ones(2, 4), keep=2) == [0, 1]  # ties to the smaller position


def test_received_attention_is_a_column_mean_or_sum():
    attn = torch.tensor([[[0.5, 0.5, 0.0], [0.2, 0.2, 0.6], [0.0, 0.1, 0.9]],
                         [[0.5, 0.5, 0.0], [0.0, 0.4, 0.6], [0.2, 0.1, 0.7]]], dtype=torch.float64)
    # head mean: [[.5,.5,0],[.1,.3,.6],[.1,.1,.8]]; columns summed: .7, .9, 1.4
    assert rv.received_attention(attn, "sum") == pytest.approx([0.7, 0.9, 1.4])
    assert rv.received_attention(attn) == pytest.approx([0.7 / 3, 0.3, 1.4 / 3])
    assert rv.received_attention(attn, drop_cls=True) == pytest.approx([0.3, 1.4 / 3])
    assert rv.received_attention(attn, queries=[1, 2]) == pytest.approx([0.1, 0.2, 0.7])


def test_merge_groups_pixel_shuffle_and_pooling():
    assert rv.qwen_merge_groups(8) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # 4x4 raster grid -> 2x2 LLM tokens, each a 2x2 block (checked against InternVLModel.pixel_shuffle)
    assert rv.internvl_pixel_shuffle_groups(4) == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    assert rv.internvl_pixel_shuffle_groups(2, offset=1) == [[1, 2, 3, 4]]  # after a CLS token
    scores = [1.0, 3.0, 0.0, 0.0, 2.0, 2.0, 2.0, 6.0]
    assert rv.pool_groups(scores, rv.qwen_merge_groups(8)) == pytest.approx([1.0, 3.0])
    assert rv.pool_groups(scores, rv.qwen_merge_groups(8), "sum") == pytest.approx([4.0, 12.0])


def test_windows_block_diagonal_and_unwindow():
    q = torch.zeros(1, 5, 2)  # equal logits: uniform attention inside each segment
    w = rv.windowed_attention(q, torch.randn(1, 5, 2), cu_seqlens=[0, 2, 5], scaling=0.5)
    expected = torch.zeros(1, 5, 5, dtype=torch.float64)
    expected[0, :2, :2] = 0.5
    expected[0, 2:, 2:] = 1.0 / 3
    assert torch.allclose(w, expected)
    assert torch.equal(rv.block_diagonal([expected[:, :2, :2], expected[:, 2:, 2:]]), expected)
    assert rv.received_attention(w, "sum") == pytest.approx([1.0, 1.0, 1.0, 1.0, 1.0])

    assert rv.unwindow(["slot0", "slot1"], window_index=[1, 0]) == ["slot1", "slot0"]
    # transformers' get_vision_window_index for grid_thw (1, 8, 12), window 56, patch 14, merge 2
    wi = [0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11, 12, 13, 18, 19, 14, 15, 20, 21, 16, 17, 22, 23]
    assert rv.unwindow(list(range(24)), wi) == torch.argsort(torch.tensor(wi)).tolist()  # the reverse index
    assert rv.unwindow(wi, wi) == list(range(24))


def test_windowed_attention_is_softmax_per_segment():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 6, 4, generator=g), torch.randn(2, 6, 4, generator=g)
    w = rv.windowed_attention(q, k, [0, 4, 6], scaling=0.5)
    for s0, s1 in ((0, 4), (4, 6)):
        direct = torch.softmax(q[:, s0:s1].double() @ k[:, s0:s1].double().transpose(1, 2) * 0.5, -1)
        assert torch.allclose(w[:, s0:s1, s0:s1], direct)
    assert float(w[:, :4, 4:].abs().sum()) == 0.0 and float(w[:, 4:, :4].abs().sum()) == 0.0


# ---------------------------------------------------------------------------------------------- VisionZip


def test_visionzip_dominant_and_contextual_by_hand():
    # CLS + 7 patches (tokens 1..7); CLS-row attention summed over the 2 heads: 1:.1 2:.5 3:.2 4:.05 5:.4 6:.15 7:.0
    half = [0.0, 0.05, 0.25, 0.1, 0.025, 0.2, 0.075, 0.0]
    attn = cls_rows([half, half])
    # dominant=3 -> CLS + the two best patches (tokens 2 and 5); rest = [1, 3, 4, 6, 7]
    # contextual=2 -> step = 5 // 2 = 2, targets rest[0], rest[2] = tokens 1 and 4; others 3, 6, 7
    metric = {1: (1.0, 0.0), 4: (0.0, 1.0), 3: (0.9, 0.1), 6: (0.2, 0.8), 7: (1.0, 0.05)}
    keys = torch.zeros(2, 8, 2, dtype=torch.float64)
    for p, (x, y) in metric.items():
        keys[0, p] = torch.tensor([2 * x, 0.0])  # the head MEAN is the metric
        keys[1, p] = torch.tensor([0.0, 2 * y])
    keys[:, 0] = keys[:, 2] = keys[:, 5] = 1.0
    hidden = torch.tensor([[float(p), 10.0 * p] for p in range(8)], dtype=torch.float64)
    kept, feats = rv.visionzip(attn, keys, hidden, dominant=3, contextual=2)
    assert kept == [0, 2, 5]
    expected = torch.stack([hidden[0], hidden[2], hidden[5],
                            hidden[1] + (hidden[3] + hidden[7]) / 2,  # target 1 gets tokens 3 and 7: + their mean
                            hidden[4] + hidden[6]])                   # target 4 gets token 6
    assert torch.allclose(feats, expected)


def test_visionzip_target_without_assigned_tokens_and_no_contextual():
    attn = cls_rows([[0.0, 0.6, 0.3, 0.1, 0.0]])
    keys = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    hidden = torch.arange(10, dtype=torch.float64).view(5, 2)
    # dominant 2 = CLS + token 1; rest [2, 3, 4], contextual 2: step 1, targets 2 and 3; token 4 is orthogonal to
    # both (cosine 0 = 0): the first target wins; target 3 keeps its own hidden state (+ 0)
    kept, feats = rv.visionzip(attn, keys, hidden, dominant=2, contextual=2)
    assert kept == [0, 1]
    assert torch.allclose(feats, torch.stack([hidden[0], hidden[1], hidden[2] + hidden[4], hidden[3]]))
    kept, feats = rv.visionzip(attn, keys, hidden, dominant=3, contextual=0)
    assert kept == [0, 1, 2] and torch.equal(feats, hidden[[0, 1, 2]])


# ---------------------------------------------------------------------------------------------- VisPruner


def test_vispruner_one_round_by_hand():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    f = torch.stack([e(0), e(1), e(3), e(3), e(4), e(5), (e(6) + 2 * e(7)), e(7), e(8), e(9)])
    # keep 8, ratio .25 -> 2 important (0, 1) + 6 diverse; residual 2..9, a = 2 4 6 8, b = 3 5 7 9; r = 8 - 6 = 2
    # max cosine to b: 2 -> 1 (same as 3), 4 -> 0, 6 -> 2/sqrt(5) (with 7), 8 -> 0: drop 2 and 6
    assert rv.vispruner(scores, f, keep=8, important_ratio=0.25) == [0, 1, 3, 4, 5, 7, 8, 9]
    assert rv.vispruner(scores, f, keep=4, important_ratio=1.0) == [0, 1, 2, 3]  # no diverse tokens
    assert rv.vispruner(scores, f, keep=10, important_ratio=0.5) == list(range(10))


def test_vispruner_rounds_reorder_the_residual():
    scores = [0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]  # patch 0 important; residual 1..6 in this order
    n5 = math.sqrt(0.81 + 0.01 + 0.04)
    f = torch.stack([e(0), e(2), e(2), (e(4) + e(3)), e(4), (0.9 * e(5) + 0.1 * e(6) + 0.2 * e(2)) / n5, e(6)])
    # keep 4, ratio .25 -> 1 important + 3 diverse, one drop per round (per_round=1):
    # round 1: a = 1 3 5, b = 2 4 6; sims 1.0, .707, .216 -> drop 1; order [3, 5] + [2, 4, 6]
    # round 2: a = 3 2 6, b = 5 4; sims .707, .216, .108 -> drop 3; order [2, 6] + [5, 4]
    # round 3: a = 2 5, b = 6 4; sims 0, .108 -> drop 5; residual [2] + [6, 4]
    assert rv.vispruner(scores, f, keep=4, important_ratio=0.25, per_round=1) == [0, 2, 4, 6]


# ---------------------------------------------------------------------------------------------- CDPruner


def test_cdpruner_relevance_is_negated_and_min_max_normalised():
    img = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    text = torch.tensor([[1.0, 0.0]])
    # cosines 1, 0, .707 -> negated -1, 0, -.707 -> (r - min + 1e-6) / (max - min)
    assert rv.cdpruner_relevance(img, text).tolist() == pytest.approx([1e-6, 1 + 1e-6, 1 - 0.5 ** 0.5 + 1e-6])
    assert rv.cdpruner_relevance(img, text, negate=False).tolist() == pytest.approx([1 + 1e-6, 1e-6, 0.5 ** 0.5 + 1e-6])
    two = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # two segments: mean negated cosines -.5, -.5, -.707
    spread = 0.5 ** 0.5 - 0.5
    assert rv.cdpruner_relevance(img, two).tolist() == pytest.approx(
        [(spread + 1e-6) / spread, (spread + 1e-6) / spread, 1e-6 / spread])


def test_cdpruner_greedy_dpp_by_hand():
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert rv.cdpruner(f, [1.0, 1.0, 1.0], keep=2) == [0, 2]  # the duplicate of 0 adds no volume
    # L = diag(r) S diag(r), r = .5 1 .8: d = .25 1 .64 -> 1; e = [.5, 1, 0]; d = 0 0 .64 -> 2
    assert rv.cdpruner(f, [0.5, 1.0, 0.8], keep=2) == [1, 2]
    with pytest.raises(ValueError):
        rv.cdpruner(f, [0.5, 1.0, 0.8], keep=3)  # rank 2


def test_cdpruner_theta_trades_diversity_for_relevance():
    f = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    r = [1.0, 0.95, 0.3]
    # no theta: after 0, d1 = .95^2 (1 - cos^2) = .0089 < d2 = .09 -> the orthogonal token 2
    assert rv.cdpruner(f, r, keep=2) == [0, 2]
    # theta .9 -> r' = exp(4.5 r) = 90.0, 71.9, 3.86: d1 = 51 > d2 = 14.9 -> the relevant near-duplicate 1
    assert rv.cdpruner(f, r, keep=2, theta=0.9) == [0, 1]


def test_cdpruner_greedy_equals_greedy_determinant_maximisation():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(7, 9, generator=g, dtype=torch.float64)
    r = torch.rand(7, generator=g, dtype=torch.float64) + 0.1
    u = f / f.norm(dim=-1, keepdim=True)
    kernel = r[:, None] * (u @ u.T) * r[None, :]
    chosen = []
    for _ in range(5):
        best = max((i for i in range(7) if i not in chosen),
                   key=lambda i: float(torch.det(kernel[chosen + [i]][:, chosen + [i]])))
        chosen.append(best)
    assert rv.cdpruner(f, r.tolist(), keep=5) == sorted(chosen)


# ---------------------------------------------------------------------------------------------- HiPrune


def test_hiprune_anchor_buffers_registers_by_hand():
    n = 16  # a 4x4 grid, width 4
    shallow = [0.0] * n
    shallow[5] = 1.0
    deep = [0.1] * n
    deep[5], deep[0], deep[10] = 1.0, 0.9, 0.5
    # keep 6, alpha .8: round(6 * .8 / 5) = 1 anchor (5), buffers 4 6 1 9, one register: the best deep among the rest
    assert rv.hiprune(shallow, deep, keep=6, width=4, alpha=0.8) == [0, 1, 4, 5, 6, 9]
    assert rv.hiprune(shallow, deep, keep=7, width=4, alpha=0.8) == [0, 1, 4, 5, 6, 9, 10]


def test_hiprune_neighbours_are_clamped_not_dropped():
    n = 16
    shallow = [0.0] * n
    shallow[3] = 1.0  # top-right corner of the 4x4 grid
    deep = [float(i) / 100 for i in range(n)]
    # 3 - 1 = 2, 3 + 1 = 4 (next row's start: no row check), 3 - 4 = -1 -> clamped to 0, 3 + 4 = 7
    assert rv.hiprune(shallow, deep, keep=5, width=4, alpha=1.0) == [0, 2, 3, 4, 7]
    assert rv.hiprune(shallow, deep, keep=6, width=4, alpha=1.0) == [0, 2, 3, 4, 7, 15]


def test_hiprune_official_overlap_with_scores_above_one():
    shallow = [0.0] * 16
    shallow[5] = 1.0
    deep = [0.01] * 16
    deep[5] = 3.0  # a query-SUM score (Qwen2.5-VL): 3 - 1 still beats every other token
    assert rv.hiprune(shallow, deep, keep=6, width=4, alpha=0.8) == [0, 1, 4, 5, 6, 9]
    assert rv.hiprune(shallow, deep, keep=6, width=4, alpha=0.8, overlap=True) == [1, 4, 5, 6, 9]  # 5 < 6 kept


def test_hiprune_budgets():
    assert rv.hiprune_budget_llava(640, 5) == 128
    assert rv.hiprune_budget_llava(64, 1) == 64
    assert rv.hiprune_budget_qwen(1000, 0.223) == 223
    assert [round(k * 0.1 / 5) for k in (192, 128, 64)] == [4, 3, 1]  # anchors at LLaVA-1.5's budgets


def test_visionzip_without_cls_and_hiprune_over_grids_reduce_to_the_official_rules():
    """The two extensions written for SequentialPrune's families: on inputs the official rules cover they are
    those rules (VisionZip: CLS first, then the same dominant / contextual split; HiPrune: one grid)."""
    g = torch.Generator().manual_seed(3)
    t, h = 9, 2
    attn = torch.softmax(torch.randn(h, t, t, generator=g, dtype=torch.float64), -1)
    keys = torch.randn(h, t, 4, generator=g, dtype=torch.float64)
    hidden = torch.randn(t, 5, generator=g, dtype=torch.float64)
    kept, feats = rv.visionzip(attn, keys, hidden, dominant=4, contextual=2)
    scores = [1e9] + rv.cls_attention(attn, "sum")  # CLS first, as VisionZip always keeps it
    dom, targets, ctx = rv.visionzip_no_cls(scores, keys.mean(0), hidden, dominant=4, contextual=2)
    assert dom == kept and targets == rv.visionzip_targets([p for p in range(t) if p not in kept], 2)
    assert torch.allclose(ctx, feats[4:])
    shallow = torch.rand(16, generator=g).tolist()
    deep = torch.rand(16, generator=g).tolist()
    assert rv.hiprune_segments(shallow, deep, 12, [(4, 4, list(range(16)))], alpha=1.0) == \
        rv.hiprune(shallow, deep, 12, width=4, alpha=1.0)  # 2 anchors: at most 10 near tokens
