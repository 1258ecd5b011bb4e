"""Vision-tower attention capture (``vision_capture.py``) and FasterVLM's selection, against eager attention
weights and the slow references of ``SequentialPrune.testing.reference_vision``.

The shared oracle (``test_oracles.py``) runs FasterVLM on every family: ratio 0 bit-identical, the masked
reference with the test's own per-family vision scores, cached decoding, batches. Here: the raw captured
statistic, Qwen2.5-VL's windows, the selection against ``reference_vision``, unchanged tower outputs and the
refusals.
"""
import pytest
import torch
from transformers import AttentionInterface

from SequentialPrune import PruneConfig, apply_pruning
from SequentialPrune import vision_capture as vc
from SequentialPrune.testing import reference_vision as rv
from tiny_models import IMAGE_ID, build_model, make_inputs, make_video_inputs, row_inputs, tiny_config
from vision_oracle import eager_vision, qwen_scores, reference_scores, sharpen, window_index

pytestmark = pytest.mark.core


def windowed_qwen2_5(attn="sdpa"):
    """A tiny Qwen2.5-VL whose last vision block (the one scored) is windowed: 2 blocks, block 0 full."""
    import transformers
    torch.manual_seed(0)
    cfg = tiny_config("qwen2_5_vl")
    cfg.vision_config.depth = 2
    cfg.vision_config.fullatt_block_indexes = [0]
    cfg._attn_implementation = attn
    model = transformers.Qwen2_5_VLForConditionalGeneration(cfg).eval()
    model.generation_config.pad_token_id = 0
    sharpen(model)
    return model


def test_cls_row_equals_eager_output_attentions_on_an_sdpa_tower():
    model = build_model("llava", "sdpa")
    sharpen(model)
    inputs = make_inputs("llava", n_images=2)
    with torch.no_grad():
        with apply_pruning(model, PruneConfig("fastervlm")) as pruner:
            model(**inputs)
            got = torch.cat(pruner.vision.records[0].chunks)  # (images, T): CLS row over every key
        assert model.config.vision_config._attn_implementation == "sdpa"  # restored
        with eager_vision(model):
            attn = model.model.vision_tower(inputs["pixel_values"], output_attentions=True).attentions[-1]
    assert torch.allclose(got, attn[:, :, 0].mean(dim=1), atol=1e-6)


def test_qwen2_5_windows_and_images_of_two_sizes():
    """Received attention in a windowed block, for two images (8x8 and 8x12 patches: 4 and 6 windows of 2x2 LLM
    tokens): the segments are the windows, the tower's order is window order, the scores come back in raster
    order per image."""
    model = windowed_qwen2_5()
    inputs = row_inputs("qwen2_5_vl", images=[(8, 8), (8, 12)])
    grid = inputs["image_grid_thw"]
    assert window_index(model, grid[1:]) != sorted(window_index(model, grid[1:]))  # a real permutation
    with torch.no_grad():
        with apply_pruning(model, PruneConfig("fastervlm")) as pruner:
            model(**inputs)
            rec = pruner.vision.records[0]
            n_windows = len(rec.chunks)
            got = pruner.vision.spec.token_scores(model, pruner.vision.records)
        with eager_vision(model, recorder=True) as calls:
            model.model.get_image_features(inputs["pixel_values"], grid)
            ref = qwen_scores(model, inputs, calls)
    assert n_windows == 4 + 6  # one attention call per window in the sdpa path
    assert torch.allclose(got.double(), torch.tensor(ref, dtype=torch.float64), atol=1e-7)
    for image in (got[:16], got[16:]):
        assert abs(float(image.sum()) - 0.25) < 1e-5  # query mean (total 1), then the mean of 4 per group


def test_packed_segments_are_scored_per_segment():
    """A flash call packs segments (``cu_seq_lens_q``): each is its own softmax, as reference_vision assembles."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 2, 7, 4, generator=g), torch.randn(1, 2, 7, 4, generator=g)
    parts = vc._segments(q, k, {"cu_seq_lens_q": torch.tensor([0, 3, 7])})
    got = torch.cat([vc.received_sum(a, b, None, 0.5) for a, b in parts], dim=-1)[0]
    ref = rv.received_attention(rv.windowed_attention(q[0], k[0], [0, 3, 7], 0.5), "sum")
    assert torch.allclose(got.double(), torch.tensor(ref, dtype=torch.float64), atol=1e-6)
    whole = vc.received_sum(q, k, None, 0.5)
    vc.QUERY_CHUNK, old = 8, vc.QUERY_CHUNK  # one query per chunk: the same sums
    try:
        assert torch.allclose(vc.received_sum(q, k, None, 0.5), whole, atol=1e-6)
    finally:
        vc.QUERY_CHUNK = old


@pytest.mark.parametrize("ratio", [0.75, 0.9])
def test_fastervlm_keeps_reference_visions_selection_on_llava(ratio):
    model = build_model("llava", "sdpa")
    sharpen(model)
    inputs = make_inputs("llava")
    cfg = PruneConfig("fastervlm", ratio)
    with torch.no_grad():
        with apply_pruning(model, cfg) as pruner:
            model(**inputs)
        with eager_vision(model):
            attn = model.model.vision_tower(inputs["pixel_values"], output_attentions=True).attentions[-1][0]
    keep = cfg.plan(64)[0]
    assert pruner.stats.kept_image_indices[0][0].tolist() == rv.fastervlm(attn[:, 0, 1:], keep)


def test_fastervlm_keeps_reference_visions_selection_on_windowed_qwen2_5():
    model = windowed_qwen2_5()
    inputs = row_inputs("qwen2_5_vl", images=[(8, 12)])
    cfg = PruneConfig("fastervlm", 0.75)
    with torch.no_grad():
        with apply_pruning(model, cfg) as pruner:
            model(**inputs)
        with eager_vision(model, recorder=True) as calls:
            model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
            scores = qwen_scores(model, inputs, calls)
    assert pruner.positions == "original"  # M-RoPE: FasterVLM's renumbering becomes original positions
    assert pruner.stats.kept_image_indices[0][0].tolist() == rv.top_positions(scores, cfg.plan(24)[0])


@pytest.mark.parametrize("family", ["llava", "internvl", "qwen2_5_vl"])
def test_the_tower_outputs_are_unchanged_by_the_capture(family):
    model = build_model(family, "sdpa")
    inputs = make_inputs(family)
    args = {k: v for k, v in inputs.items() if k in ("pixel_values", "image_grid_thw")}
    with torch.no_grad():
        ref = model.model.get_image_features(**args, output_hidden_states=True)
        with apply_pruning(model, PruneConfig("fastervlm")) as pruner:
            got = model.model.get_image_features(**args, output_hidden_states=True)
            assert len(pruner.vision.records) == 1 and pruner.vision.records[0].chunks
    for a, b in zip(ref.pooler_output, got.pooler_output):
        assert torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(ref.hidden_states, got.hidden_states) if a is not None)
    assert "get_image_features" not in vars(model.model) and not vc._TARGETS  # everything restored


def test_llava_next_scores_follow_the_stock_packing_with_unpadding():
    """An image whose padding the stock packing crops: the scores line up with the packed features, the newline
    tokens being the ones scored NEWLINE_SCORE."""
    model = build_model("llava_next")
    pix = make_inputs("llava_next")["pixel_values"]
    sizes = torch.tensor([[30, 56]])  # wide: the 4x4 tile canvas loses rows to unpadding
    with torch.no_grad(), apply_pruning(model, PruneConfig("fastervlm")) as pruner:
        feats = model.model.get_image_features(pix, sizes).pooler_output[0]
        scores = pruner.vision.spec.token_scores(model, pruner.vision.records)
    is_newline = (feats == model.model.image_newline).all(dim=-1)
    assert scores.shape[0] == feats.shape[0] < 16 + 16 + 4
    assert torch.equal(scores == -1.0, is_newline) and int(is_newline.sum()) >= 1


def test_ratio_zero_installs_no_capture():
    model = build_model("llava")
    with apply_pruning(model, PruneConfig("fastervlm", 0.0)) as pruner:
        assert pruner.vision is None and model.config.vision_config._attn_implementation == "sdpa"


def test_precomputed_image_features_are_refused():
    model = build_model("llava")
    inputs = make_inputs("llava")
    with torch.no_grad():
        enc = model.model.get_image_features(inputs["pixel_values"])  # encoded before the pruner
        ids = {k: v for k, v in inputs.items() if k != "pixel_values"}
        with apply_pruning(model, PruneConfig("fastervlm")):
            with pytest.raises(RuntimeError, match="no vision-tower scores"):
                model(**ids, mm_encoder_outputs={"image": enc})


def test_video_tokens_are_refused():
    model = build_model("qwen2_vl")
    with torch.no_grad(), apply_pruning(model, PruneConfig("fastervlm")):
        with pytest.raises(RuntimeError, match="video tokens get no vision-side score"):
            model(**make_video_inputs("qwen2_vl"))


def test_generate_reads_the_scores_of_its_own_images():
    """generate encodes before its first forward; a second prompt's images replace the first's."""
    model = build_model("llava")
    sharpen(model)
    a, b = make_inputs("llava", seed=0), make_inputs("llava", seed=1)
    expected = [rv.top_positions(reference_scores(model, "llava", x)[0], 16) for x in (a, b)]
    assert expected[0] != expected[1]
    with torch.no_grad(), apply_pruning(model, PruneConfig("fastervlm")) as pruner:
        for inputs, want in ((a, expected[0]), (b, expected[1]), (a, expected[0])):
            model.generate(**inputs, max_new_tokens=2, do_sample=False)
            assert pruner.stats.kept_image_indices[0][0].tolist() == want
    assert int((a["input_ids"] == IMAGE_ID).sum()) == 64


def test_onevision_multi_image_prompt_scores_one_crop_per_image():
    """batch_num_images > 1: OneVision does not tile the images (one crop and one newline each), and the
    recorded call's arguments make the mapping follow."""
    from tiny_models import image_inputs, prompt_ids
    model = build_model("llava_onevision")
    sharpen(model)
    ids = prompt_ids("llava_onevision", 2, tokens=[17, 17])[None]
    pix = image_inputs("llava_onevision", 2)
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), batch_num_images=torch.tensor([2]), **pix)
    with torch.no_grad():
        with apply_pruning(model, PruneConfig("fastervlm")) as pruner:
            model(**inputs)
        with eager_vision(model):
            attn = model.model.vision_tower(pix["pixel_values"][:, 0], output_attentions=True).attentions[-1]
    ref = [s for a in attn.double() for s in rv.received_attention(a) + [-1.0]]
    assert pruner.stats.kept_image_indices[0][0].tolist() == rv.top_positions(ref, 8)


def test_vision_attention_swapped_after_apply_is_detected():
    model = build_model("llava")
    with torch.no_grad(), apply_pruning(model, PruneConfig("fastervlm")):
        model.set_attn_implementation({"vision_config": "sdpa"})
        with pytest.raises(RuntimeError, match="vision attention implementation changed"):
            model(**make_inputs("llava"))


# ----------------------------------------------------------- a packed (varlen) flash call, emulated on CPU
VARLEN = "test_flash_varlen"  # "flash" in the name: the Qwen towers make one packed call with cu_seq_lens_q


def _varlen_like(module, query, key, value, attention_mask, **kwargs):
    """What varlen flash attention computes: each ``cu_seq_lens_q`` segment attends within itself."""
    from SequentialPrune.attention_hooks import _stock_function
    cu = kwargs["cu_seq_lens_q"].tolist()
    eager = _stock_function(module, "eager")
    outs = [eager(module, query[:, :, a:e], key[:, :, a:e], value[:, :, a:e], None, scaling=kwargs["scaling"])[0]
            for a, e in zip(cu[:-1], cu[1:])]
    return torch.cat(outs, dim=1), None


AttentionInterface.register(VARLEN, _varlen_like)


def test_a_packed_flash_call_is_scored_per_segment():
    """Qwen2.5-VL's windowed block as one packed flash call: the same scores as the per-window sdpa calls."""
    model = windowed_qwen2_5()
    inputs = row_inputs("qwen2_5_vl", images=[(8, 8), (8, 12)])
    with torch.no_grad():
        with apply_pruning(model, PruneConfig("fastervlm")) as pruner:
            model(**inputs)
            per_window = pruner.vision.spec.token_scores(model, pruner.vision.records)
        model.set_attn_implementation({"vision_config": VARLEN})
        with apply_pruning(model, PruneConfig("fastervlm")) as pruner:
            model(**inputs)
            assert len(pruner.vision.records[0].chunks) == 4 + 6  # split from ONE call
            packed = pruner.vision.spec.token_scores(model, pruner.vision.records)
    assert torch.allclose(packed, per_window, atol=1e-7)


def test_onevision_units_of_a_downsampled_canvas_name_only_the_tiles_each_token_is_blended_from():
    """OneVision's ``anyres_max`` downsampling blends neighbouring tiles bilinearly: each token's unit must be one
    of the tiles its source footprint touches (an interpolated crop number, rounded, named tiles in between). The
    tiny config (32 px crops of 8 px patches: 4 x 4 tokens per crop) with a 96 x 96 pinpoint tiles a 96 px image
    3 x 3; anyres_max_4 shrinks that 12 x 12 canvas by 1.5 to 8 x 8. Footprints re-derived (align_corners=False)."""
    import math

    from SequentialPrune.adapters.llava import anyres_token_units
    from SequentialPrune.vision_capture import VisionRecord

    model = build_model("llava_onevision")
    model.config.image_grid_pinpoints = model.config.image_grid_pinpoints + [[96, 96]]
    side, tiles = 4, 3  # tokens per crop side; tiles per canvas side
    record = VisionRecord(call={"image_sizes": torch.tensor([[96, 96]]), "vision_aspect_ratio": "anyres_max_4"},
                          statistic="received", chunks=[torch.rand(1 + tiles * tiles, side * side)])
    units = anyres_token_units(model, [record]).tolist()
    canvas = side * tiles
    out = int(canvas // math.sqrt(canvas * canvas / (4 * side * side)))  # 8
    assert units[:side * side] == [0] * (side * side)  # the base image
    grid = units[side * side:]
    assert len(grid) == out * (out + 1)  # each row closed by a newline

    def sources(i):  # the two canvas rows (or columns) output index i reads
        y = max((i + 0.5) * canvas / out - 0.5, 0)
        return {math.floor(y), min(math.floor(y) + 1, canvas - 1)}

    for i in range(out):
        for j in range(out + 1):
            u = grid[i * (out + 1) + j]
            if j == out:
                assert u == -1
                continue
            touched = {1 + (y // side) * tiles + x // side for y in sources(i) for x in sources(j)}
            assert u in touched, (i, j, u, touched)
    assert set(grid) - {-1} == set(range(1, 1 + tiles * tiles))
