"""Batches whose rows differ: every method, on every family, gives each row of a mixed batch what that row
gives alone (kept image tokens per layer, last-token logits, greedy tokens, per-row stats).

The rows hold different numbers of images (Qwen: images of different sizes, so different token counts per
image) and one row is text only; each row follows its own schedule, computed from its own image-token count.
"""
import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from SequentialPrune import PruneConfig, apply_pruning
from test_oracles import ORACLE_CONFIGS, runnable
from tiny_models import FAMILIES, QWEN, build_model, collate, row_inputs

pytestmark = pytest.mark.core  # also run on the oldest supported transformers in CI

NEW = 4
_MODELS = {}


def model_for(family, attn="sdpa"):
    """One tiny model per family and attention (pruners are removed after each use, restoring it)."""
    if (family, attn) not in _MODELS:
        model = build_model(family, "sdpa" if attn == FLASH else attn)
        if attn == FLASH:
            model.set_attn_implementation({"text_config": FLASH})
        _MODELS[family, attn] = model
    return _MODELS[family, attn]


def mixed_rows(family, suffixes=(7, 3, 9)):
    """One image, two images (Qwen: 8x8, then 4x8 and 8x12 patch grids: 16, then 8 + 24 tokens), text only."""
    spec = [[(8, 8)], [(4, 8), (8, 12)], []] if family in QWEN else [1, 2, 0]
    return [row_inputs(family, images, seed=r, suffix=s) for r, (images, s) in enumerate(zip(spec, suffixes))]


def mask_positions(batch, family):
    """The positions generate gives a left-padded row of a 1-D RoPE family (Qwen derives its own M-RoPE ones)."""
    if family in QWEN:
        return {}
    mask = batch["attention_mask"]
    return {"position_ids": (mask.long().cumsum(-1) - 1).clamp(min=0)}


def assert_rows_alone(family, cfg, rows, attn="sdpa", **gen_kw):
    model = model_for(family, attn)
    batch = collate(rows)
    gen = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, **gen_kw)
    with torch.no_grad(), apply_pruning(model, cfg) as pruner:
        last = model(**batch, **mask_positions(batch, family)).logits[:, -1]
        stats = pruner.stats
        assert stats.batch_size == len(rows)
        per_row = [stats.row(r) for r in range(len(rows))]
        kept = [{k: v.clone() for k, v in s.kept_image_indices.items()} for s in per_row]
        seq = model.generate(**batch, **gen)[:, -NEW:]
        for r, row in enumerate(rows):
            alone = model(**row).logits[:, -1]
            assert (alone - last[r]).abs().max().item() < 1e-5, f"row {r}"
            one = pruner.stats
            assert per_row[r].n_image_tokens == one.n_image_tokens
            assert per_row[r].seq_len == one.seq_len
            assert per_row[r].image_tokens_per_layer == one.image_tokens_per_layer, f"row {r}"
            assert per_row[r].prefill_flops == one.prefill_flops
            assert sorted(kept[r]) == sorted(one.kept_image_indices), f"row {r}"
            for layer, k in one.kept_image_indices.items():
                assert torch.equal(kept[r][layer], k), f"row {r}, layer {layer}"
            assert torch.equal(model.generate(**row, **gen)[0, -NEW:], seq[r]), f"row {r}"
    return per_row


@pytest.mark.parametrize("family,method", runnable(sorted(ORACLE_CONFIGS), FAMILIES))
def test_a_mixed_batch_gives_each_row_what_it_gives_alone(family, method):
    per_row = assert_rows_alone(family, ORACLE_CONFIGS[method], mixed_rows(family))
    counts = [s.n_image_tokens for s in per_row]
    assert counts[0] != counts[1] and counts[2] == 0  # the rows really differ
    assert per_row[0].image_tokens_per_layer != per_row[1].image_tokens_per_layer
    assert per_row[2].image_tokens_per_layer == [0] * 12


@pytest.mark.parametrize("family", ["llava", "qwen3_vl"])  # eager's masks are family-independent
@pytest.mark.parametrize("method", ["sequential", "pdrop", "random"])
def test_eager_attention_mixed_batch(family, method):
    assert_rows_alone(family, ORACLE_CONFIGS[method], mixed_rows(family), attn="eager")


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
@pytest.mark.parametrize("method", ["sequential", "divprune"])
def test_recompute_mode_mixed_batch(family, method):
    cfg = ORACLE_CONFIGS[method].replace(cache_mode="recompute")
    assert_rows_alone(family, cfg, mixed_rows(family), use_cache=False)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen3_vl"])
@pytest.mark.parametrize("method", ["fastv", "random_oneshot"])
def test_rows_of_equal_length_without_padding(family, method):
    """No row is padded, so the model gives no mask (sdpa); the rows still prune to different lengths."""
    image_row = row_inputs(family, 1, seed=0)
    text = image_row["input_ids"].shape[1] - 6  # [bos] + 5 prefix tokens, then the suffix
    rows = [image_row, row_inputs(family, [] if family in QWEN else 0, seed=1, suffix=text)]
    assert rows[0]["input_ids"].shape == rows[1]["input_ids"].shape
    assert bool(collate(rows)["attention_mask"].all())
    assert_rows_alone(family, ORACLE_CONFIGS[method], rows)


def test_a_uniform_batch_keeps_the_batch_level_stats():
    """Rows with equal image-token counts: the batch-level fields describe every row, as before."""
    rows = mixed_rows("llava", suffixes=(7, 3, 9))[:1] + [row_inputs("llava", 1, seed=5, suffix=3)]
    per_row = assert_rows_alone("llava", PruneConfig("sequential", 0.75, 2), rows)
    assert per_row[0].image_tokens_per_layer == per_row[1].image_tokens_per_layer
    model = model_for("llava")
    with torch.no_grad(), apply_pruning(model, PruneConfig("sequential", 0.75, 2)) as pruner:
        model(**collate(rows))
    st = pruner.stats
    assert st.image_tokens_per_layer == per_row[0].image_tokens_per_layer
    assert all(v.shape[0] == 2 and bool((v >= 0).all()) for v in st.kept_image_indices.values())
    assert "rows" in st.to_dict()  # the rows differ in length, so each row's own record is written too


# ----------------------------------------------------------- a flash-style 2-D mask, emulated on CPU
FLASH = "test_flash2d"


def _flash_like(module, query, key, value, attention_mask, **kwargs):
    """What flash attention computes from its (B, kv) padding mask: causal in slot order (aligned to the last
    query), padded keys hidden, padded query rows zero."""
    b, _, q, _ = query.shape
    kv = key.shape[2]
    valid = torch.ones(b, kv, dtype=torch.bool) if attention_mask is None else attention_mask[:, -kv:].bool()
    causal = torch.ones(q, kv, dtype=torch.bool).tril(kv - q)
    allowed = causal[None] & valid[:, None, :]
    allowed |= ~allowed.any(-1, keepdim=True)
    kwargs.pop("is_causal", None)
    out, w = ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, allowed[:, None], **kwargs)
    return out.masked_fill(~valid[:, -q:, None, None], 0.0), w


AttentionInterface.register(FLASH, _flash_like)
ALL_MASK_ATTENTION_FUNCTIONS.register(FLASH, flash_attention_mask)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
@pytest.mark.parametrize("method", ["sequential", "divprune"])
def test_flash_style_padding_mask_mixed_batch(family, method):
    assert_rows_alone(family, ORACLE_CONFIGS[method], mixed_rows(family), attn=FLASH)


@pytest.mark.parametrize("method", ["divprune", "fastv"])
def test_decoding_by_hand_without_a_mask_hides_the_padding_slots(method):
    """Unpadded rows that prune to different lengths, decoded one token at a time with no attention mask at
    all (so the model gives none): the pruner builds the masks that hide the padding slots, at K = 0 (layer 0,
    which sizes the masks) and after it, and each row decodes as it does alone."""
    image_row = row_inputs("llava", 1, seed=0)
    rows = [image_row, row_inputs("llava", 0, seed=1, suffix=image_row["input_ids"].shape[1] - 6)]
    model = model_for("llava")
    cfg = ORACLE_CONFIGS[method]
    with torch.no_grad(), apply_pruning(model, cfg):
        alone = [model.generate(**row, max_new_tokens=3, do_sample=False, output_logits=True,
                                return_dict_in_generate=True).logits for row in rows]
        batch = collate(rows)
        out = model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"], use_cache=True)
        logits, cache = out.logits, out.past_key_values
        for step in range(3):
            for r in range(2):
                assert (logits[r, -1] - alone[r][step][0]).abs().max().item() < 1e-5, (step, r)
            token = logits[:, -1].argmax(-1, keepdim=True)
            out = model(input_ids=token, past_key_values=cache)
            logits = out.logits


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen3_vl"])
@pytest.mark.parametrize("cfg", [PruneConfig("fastv", 1.0, 2), PruneConfig("sequential", 1.0, 1, step=0.25),
                                 PruneConfig("divprune", 1.0)], ids=["fastv", "sequential", "divprune_k0"])
def test_rows_that_keep_no_image_token(family, cfg):
    """R = 1: every image row ends with no image token (at different layers for stepwise schedules of
    different N), beside a text-only row."""
    per_row = assert_rows_alone(family, cfg, mixed_rows(family))
    assert [s.image_tokens_per_layer[-1] for s in per_row] == [0, 0, 0]
