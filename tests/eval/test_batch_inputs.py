"""Samples' processor outputs joined into one batch (``evaluation/batch_inputs.py``): per-token tensors left-padded,
per-image ones concatenated, tiles of different counts zero-padded as the processors batch them; and the joined
batch, pruned, gives each sample what it gives alone (LLaVA-OneVision's anyres tiles, a text-only row)."""
import pytest
import torch
from PIL import Image

from SequentialPrune import PruneConfig, apply_pruning
from SequentialPrune.evaluation.batch_inputs import join_rows


def test_join_rows_pads_tokens_and_tiles_and_skips_rows_without_images():
    a = {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.ones(1, 3, dtype=torch.long),
         "pixel_values": torch.ones(1, 2, 3, 4, 4), "image_sizes": torch.tensor([[4, 4]])}
    b = {"input_ids": torch.tensor([[8]]), "attention_mask": torch.ones(1, 1, dtype=torch.long)}
    c = {"input_ids": torch.tensor([[1, 2]]), "attention_mask": torch.ones(1, 2, dtype=torch.long),
         "pixel_values": 2 * torch.ones(2, 5, 3, 4, 4), "image_sizes": torch.tensor([[4, 8], [8, 8]])}
    out = join_rows([a, b, c], pad_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8], [0, 1, 2]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert out["pixel_values"].shape == (3, 5, 3, 4, 4)  # a's image padded from 2 tiles to 5, b adds none
    assert bool((out["pixel_values"][0, 2:] == 0).all()) and bool((out["pixel_values"][0, :2] == 1).all())
    assert out["image_sizes"].tolist() == [[4, 4], [4, 8], [8, 8]]
    with pytest.raises(ValueError, match="different per-token inputs"):
        join_rows([a, {"input_ids": torch.tensor([[1]])}], pad_id=0)
    with pytest.raises(TypeError, match="not a tensor"):
        join_rows([dict(a, extra=[1])], pad_id=0)


def test_onevision_rows_of_different_tile_counts_equal_alone(tmp_path):
    """Images of 32x32 (1 + 1 tiles) and 64x48 (1 + 4 tiles) and a text-only prompt through the real processor,
    joined, pruned with Sequential: each row's logits, tokens and stats are its own."""
    from scripts.tiny.families import BY_MODEL_TYPE
    from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

    ckpt = BY_MODEL_TYPE["llava_onevision"](tmp_path / "ov", num_layers=4)
    processor = AutoProcessor.from_pretrained(ckpt)
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(ckpt).eval()
    rows = [processor(images=[Image.new("RGB", (32, 32), (200, 30, 30))], text="<image>what colour is it?",
                      return_tensors="pt"),
            processor(images=[Image.new("RGB", (64, 48), (30, 30, 200))], text="<image>and this one?",
                      return_tensors="pt"),
            processor(text="no image here, only words", return_tensors="pt")]
    rows = [dict(r) for r in rows]
    assert rows[0]["pixel_values"].shape[1] != rows[1]["pixel_values"].shape[1]  # different tile counts
    batch = join_rows(rows, pad_id=processor.tokenizer.pad_token_id or 0)
    gen = dict(max_new_tokens=3, min_new_tokens=3, do_sample=False)
    with torch.no_grad(), apply_pruning(model, PruneConfig("sequential", 0.5, 1, step=0.25)) as pruner:
        seq = model.generate(**batch, **gen)[:, -3:]
        per_row = [pruner.stats.row(r).to_dict() for r in range(3)]
        for r, row in enumerate(rows):
            assert torch.equal(model.generate(**row, **gen)[0, -3:], seq[r])
            assert pruner.stats.to_dict() == per_row[r]
    assert per_row[0]["n_image_tokens"] < per_row[1]["n_image_tokens"] and per_row[2]["n_image_tokens"] == 0
