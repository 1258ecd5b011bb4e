"""Picture which image tokens survive each pruning layer.

Saves a PNG with one panel per pruning layer: the image as the model saw it,
with the patches of dropped image tokens greyed out, and the unpruned and
pruned answers beneath.

    python scripts/visualize_pruning.py --model-path llava-hf/llava-1.5-7b-hf --image cat.jpg \
        --question "What is in the picture?" --method sequential --ratio 0.75 --layer 2 --out cat.png
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from SequentialPrune import METHODS, PruneConfig, apply_pruning  # noqa: E402

# model_type -> fn(processor, inputs, image) -> (displayed image HxWx3 uint8, grid rows, grid cols)
GRIDS: Dict[str, Callable] = {}


def register_grid(*model_types: str):
    """Register how a family lays its image tokens over the image."""
    def deco(fn):
        for t in model_types:
            GRIDS[t] = fn
        return fn
    return deco


@register_grid("llava")
def llava_grid(processor, inputs, image) -> Tuple[np.ndarray, int, int]:
    """LLaVA-1.5: a square grid over the resized, centre-cropped image (24x24 at 336 px)."""
    ip = processor.image_processor
    pix = inputs["pixel_values"][0].float()
    mean = torch.tensor(ip.image_mean).view(3, 1, 1)
    std = torch.tensor(ip.image_std).view(3, 1, 1)
    shown = ((pix * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
    n = int((inputs["input_ids"][0] == _image_token_id(processor)).sum())
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} image tokens do not form a square grid (LLaVA-NeXT tiling is not drawn)")
    return shown, side, side


@register_grid("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
def qwen_grid(processor, inputs, image) -> Tuple[np.ndarray, int, int]:
    """Qwen2-VL and successors: the image resized to its patch grid; each token covers 2x2 merged patches."""
    t, h, w = inputs["image_grid_thw"][0].tolist()
    patch = processor.image_processor.patch_size
    merge = processor.image_processor.merge_size
    shown = np.asarray(image.convert("RGB").resize((w * patch, h * patch), Image.BICUBIC))
    return shown, h // merge, w // merge


def _image_token_id(processor) -> int:
    tok = processor.tokenizer
    token = getattr(processor, "image_token", None) or getattr(tok, "image_token", None) or "<image>"
    return tok.convert_tokens_to_ids(token)


def load(model_path: str, attn: str = "sdpa", device: str | None = None):
    """Processor and model from a hub id or a local directory."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    processor = AutoProcessor.from_pretrained(model_path)
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=dtype, attn_implementation=attn)
    return processor, model.to(device).eval()


def answer(processor, model, image, question: str, max_new_tokens: int, system: str = "") -> Tuple[str, dict]:
    """Greedy answer and the processed inputs."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    if system:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[image], text=[prompt], return_tensors="pt").to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
    text = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    return text, inputs


def render(model, processor, image, question: str, cfg: PruneConfig, out: Path,
           max_new_tokens: int = 32, system: str = "") -> list:
    """Write the PNG; return the pruning layers drawn (one panel each)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model_type = model.config.model_type
    if model_type not in GRIDS:
        raise ValueError(f"no image-grid drawing for model type {model_type!r}; supported: {sorted(GRIDS)}")
    base_answer, inputs = answer(processor, model, image, question, max_new_tokens, system)
    with apply_pruning(model, cfg) as pruner:
        pruned_answer, _ = answer(processor, model, image, question, max_new_tokens, system)
    stats = pruner.stats
    shown, rows, cols = GRIDS[model_type](processor, inputs.to("cpu"), image)
    n = stats.n_image_tokens
    if n != rows * cols:
        raise ValueError(f"the prompt has {n} image tokens but the grid is {rows}x{cols}; draw one image at a time")
    layers = sorted(stats.kept_image_indices)
    if not layers:
        raise ValueError(f"{cfg.tag()} drops no image token here; choose a ratio > 0")

    fig, axes = plt.subplots(1, len(layers), figsize=(max(5.0, 2.4 * len(layers)), 3.3), squeeze=False)
    hh, ww = shown.shape[0] / rows, shown.shape[1] / cols
    grey = (shown.astype(np.float32) * 0.25 + 70 * 0.75).astype(np.uint8)  # dropped: dark
    for ax, layer in zip(axes[0], layers):
        kept = torch.zeros(n, dtype=torch.bool)
        kept[stats.kept_image_indices[layer][0]] = True
        cell = kept.view(rows, cols).numpy()
        ys = (np.arange(shown.shape[0]) / hh).astype(int).clip(0, rows - 1)
        xs = (np.arange(shown.shape[1]) / ww).astype(int).clip(0, cols - 1)
        pixel_kept = cell[ys][:, xs]
        ax.imshow(np.where(pixel_kept[..., None], shown, grey))
        ax.set_title(f"layer {layer}: {int(cell.sum())}/{n} kept", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{cfg.tag()}  |  Q: {question}", fontsize=9)
    fig.text(0.5, 0.02, f"unpruned: {base_answer!r}    pruned: {pruned_answer!r}", ha="center", fontsize=9,
             wrap=True)
    fig.tight_layout(rect=(0, 0.08, 1, 0.92))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, metadata={"Description": f"panels={len(layers)} layers={layers}"})
    plt.close(fig)
    return layers


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--model-path", required=True, help="hub id or local checkpoint directory")
    p.add_argument("--image", required=True)
    p.add_argument("--question", required=True)
    p.add_argument("--method", default="sequential", choices=[m for m in METHODS if m != "none"])
    p.add_argument("--ratio", type=float, default=None, help="R (default: the method's)")
    p.add_argument("--layer", type=int, default=None, help="K (default: the method's)")
    p.add_argument("--step", type=float, default=None, help="percentage points of N per layer (stepwise methods)")
    p.add_argument("--seed", type=int, default=None, help="seed of the random scorer")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="schedule/scorer option, e.g. stages=2,8,16 (pdrop) or schedule=2:0.5,6:0.3 (custom)")
    p.add_argument("--attn-impl", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--system", default="", help="system prompt, if the model expects one (e.g. LLaVA's Vicuna prompt)")
    p.add_argument("--out", default="pruning.png")
    a = p.parse_args(argv)
    try:
        if any("=" not in o for o in a.option):
            raise ValueError(f"--option takes KEY=VALUE, got {a.option}")
        options = {k: int(v) if v.isdigit() else v for k, v in (o.split("=", 1) for o in a.option)}
        cfg = PruneConfig(a.method, ratio=a.ratio, layer=a.layer, step=None if a.step is None else a.step / 100,
                          seed=a.seed, options=options or None)
    except ValueError as e:
        p.error(str(e))
    processor, model = load(a.model_path, a.attn_impl)
    layers = render(model, processor, Image.open(a.image).convert("RGB"), a.question, cfg, Path(a.out),
                    a.max_new_tokens, a.system)
    print(f"wrote {a.out}: {len(layers)} panels (layers {layers})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
