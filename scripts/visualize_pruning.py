"""Picture which image tokens survive each pruning layer.

Saves a PNG with one panel per pruning layer: the image as the model saw it,
with the patches of dropped image tokens greyed out, merged tokens (VisionZip's
contextual tokens: a kept slot whose feature a merge rewrote) tinted orange, and
the unpruned and pruned answers beneath.

    python scripts/visualize_pruning.py --model-path llava-hf/llava-1.5-7b-hf --image cat.jpg \
        --question "What is in the picture?" --method sequential --ratio 0.75 --layer 2 --out cat.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: the library from this checkout, installed or not
    sys.path.insert(0, str(ROOT))

from SequentialPrune import METHODS, PruneConfig, apply_pruning  # noqa: E402
from SequentialPrune.config import parse_option  # noqa: E402


@dataclass
class View:
    """One picture of image tokens: ``pixels`` cut into a grid of ``cells.shape`` cells, where ``cells[i, j]``
    is the index (among the prompt's image tokens) of the token that covers that cell."""
    title: str
    pixels: np.ndarray   # (H, W, 3) uint8
    cells: np.ndarray    # (rows, cols) int


MERGED_RGB = (255, 140, 0)  # the tint of merged tokens (kept slots whose features a merge rewrote)

# model_type -> fn(processor, model, inputs, image, coords) -> [View]; ``coords`` (N, 3) are the engine's
# (segment, row, col) of each image token (SequentialPrune.adapters)
GRIDS: Dict[str, Callable] = {}


def register_grid(*model_types: str):
    """Register how a family lays its image tokens over the image."""
    def deco(fn):
        for t in model_types:
            GRIDS[t] = fn
        return fn
    return deco


def _shown(image_processor, pix: torch.Tensor) -> np.ndarray:
    """A (3, H, W) normalised pixel tensor as the uint8 picture the model saw."""
    mean = torch.tensor(image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(3, 1, 1)
    return ((pix.float() * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()


def _segments(coords: torch.Tensor) -> List[Tuple[int, int, int, np.ndarray]]:
    """(segment, rows, cols, token indices) of each segment of the coordinates, in order."""
    out = []
    for seg in coords[:, 0].unique(sorted=True).tolist():
        idx = (coords[:, 0] == seg).nonzero().flatten()
        rows, cols = int(coords[idx, 1].max()) + 1, int(coords[idx, 2].max()) + 1
        if len(idx) != rows * cols:
            raise ValueError(f"image-token segment {seg} is not a full {rows}x{cols} grid; it cannot be drawn")
        cells = np.full((rows, cols), -1)
        cells[coords[idx, 1].numpy(), coords[idx, 2].numpy()] = idx.numpy()
        out.append((seg, rows, cols, cells))
    return out


@register_grid("llava")
def llava_grid(processor, model, inputs, image, coords) -> List[View]:
    """LLaVA-1.5: a square grid over the processed image (24x24 at 336 px)."""
    segs = _segments(coords)
    if len(segs) != 1:
        raise ValueError(f"{len(segs)} image grids in the prompt; draw one image at a time")
    (_, _, _, cells), = segs
    return [View("", _shown(processor.image_processor, inputs["pixel_values"][0]), cells)]


@register_grid("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
def qwen_grid(processor, model, inputs, image, coords) -> List[View]:
    """Qwen2-VL and successors: the image resized to its patch grid; each token covers 2x2 merged patches."""
    t, h, w = inputs["image_grid_thw"][0].tolist()
    patch = processor.image_processor.patch_size
    merge = processor.image_processor.merge_size
    shown = np.asarray(image.convert("RGB").resize((w * patch, h * patch), Image.BICUBIC))
    return [View("", shown, np.arange((h // merge) * (w // merge)).reshape(h // merge, w // merge))]


@register_grid("llava_next", "llava_onevision")
def anyres_grid(processor, model, inputs, image, coords) -> List[View]:
    """LLaVA-NeXT / OneVision: the base image, then the tiles stitched into the high-resolution image, cropped
    as the model unpads their features; each row of the tile map ends in a newline token (not drawn)."""
    module = sys.modules[type(model).__module__]
    segs = _segments(coords)
    if len(segs) != 2:
        raise ValueError(f"expected the base image and one tile map, found {len(segs)} image-token segments")
    pix = inputs["pixel_values"][0]                              # (1 + tiles, 3, S, S)
    vision = model.config.vision_config
    size, side = vision.image_size, vision.image_size // vision.patch_size
    ip = processor.image_processor
    n_h, n_w = module.get_anyres_image_grid_shape(inputs["image_sizes"][0].tolist(), model.config.image_grid_pinpoints,
                                                  size)
    tiles = [_shown(ip, pix[1 + t]) for t in range(n_h * n_w)]
    stitched = np.concatenate([np.concatenate(tiles[r * n_w:(r + 1) * n_w], 1) for r in range(n_h)], 0)
    # the model's own unpadding, on a feature map of the stitched size, says which part of the picture is kept
    h_u, w_u = module.unpad_image(torch.zeros(1, n_h * side, n_w * side), inputs["image_sizes"][0]).shape[1:]
    top, left = (n_h * side - h_u) // 2 * (size // side), (n_w * side - w_u) // 2 * (size // side)
    crop = stitched[top:top + h_u * (size // side), left:left + w_u * (size // side)]
    _, _, _, base_cells = segs[0]
    _, rows, cols, map_cells = segs[1]
    return [View("base image", _shown(ip, pix[0]), base_cells),
            View(f"{n_h}x{n_w} tiles", crop, map_cells[:, :cols - 1])]  # the last column: newline tokens


@register_grid("internvl")
def internvl_grid(processor, model, inputs, image, coords) -> List[View]:
    """InternVL: each tile (the thumbnail last) with its pixel-shuffled token grid."""
    pix = inputs["pixel_values"]
    segs = _segments(coords)
    if len(segs) != pix.shape[0]:
        raise ValueError(f"{len(segs)} image-token grids for {pix.shape[0]} tiles")
    names = [f"tile {t + 1}" for t in range(len(segs))]
    if len(segs) > 1:
        names[-1] = "thumbnail"
    return [View(name, _shown(processor.image_processor, pix[t]), cells)
            for name, t, (_, _, _, cells) in zip(names, range(len(segs)), segs)]


def image_token_coords(model, inputs, capture: dict) -> torch.Tensor:
    """The engine's (segment, row, col) of each image token of row 0, from the text model's prefill call."""
    from SequentialPrune.adapters import CoordsContext, adapter_for

    adapter = adapter_for(model)
    visual = torch.isin(inputs["input_ids"], torch.tensor(adapter.visual_token_ids(model), device=inputs["input_ids"].device))
    coords = adapter.coords(CoordsContext(model, inputs["input_ids"], visual, capture))
    return coords[0].cpu()


def load(model_path: str, attn: str = "sdpa", device: str | None = None):
    """Processor and model from a hub id or a local directory."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    processor = AutoProcessor.from_pretrained(model_path)
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=dtype, attn_implementation=attn)
    return processor, model.to(device).eval()


def answer(processor, model, image, question: str, max_new_tokens: int, system: str = "",
           capture: dict | None = None) -> Tuple[str, dict]:
    """Greedy answer and the processed inputs; ``capture`` receives the text model's prefill keywords."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    if system:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[image], text=[prompt], return_tensors="pt").to(model.device)
    handle = None
    if capture is not None:
        from SequentialPrune.adapters import adapter_for

        def keep_first(module, args, kwargs):
            if not capture:
                capture.update(kwargs)
        handle = adapter_for(model).text_model(model).register_forward_pre_hook(keep_first, with_kwargs=True)
    try:
        with torch.no_grad():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
    finally:
        if handle is not None:
            handle.remove()
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
    capture: dict = {}
    base_answer, inputs = answer(processor, model, image, question, max_new_tokens, system, capture)
    with apply_pruning(model, cfg) as pruner:
        pruned_answer, _ = answer(processor, model, image, question, max_new_tokens, system)
    stats = pruner.stats
    n = stats.n_image_tokens
    coords = image_token_coords(model, inputs, capture)
    if len(coords) != n:
        raise ValueError(f"the prompt has {n} image tokens, the image grids {len(coords)}; draw one image at a time")
    views = GRIDS[model_type](processor, model, inputs.to("cpu"), image, coords)
    layers = sorted(stats.kept_image_indices)
    if not layers:
        raise ValueError(f"{cfg.tag()} drops no image token here; choose a ratio > 0")

    if len(views) == 1:  # one picture: the layers side by side
        fig, axes = plt.subplots(1, len(layers), figsize=(max(5.0, 2.4 * len(layers)), 3.3), squeeze=False)
        axes = axes.T
    else:                # a row of pictures per layer
        fig, axes = plt.subplots(len(layers), len(views), squeeze=False,
                                 figsize=(max(5.0, 2.6 * len(views)), 0.6 + 2.7 * len(layers)))
    greys = [(v.pixels.astype(np.float32) * 0.25 + 70 * 0.75).astype(np.uint8) for v in views]  # dropped: dark
    # merged (a kept slot whose feature a merge rewrote, e.g. VisionZip's contextual tokens): tinted orange
    tints = [(v.pixels.astype(np.float32) * 0.45 + np.array(MERGED_RGB) * 0.55).astype(np.uint8) for v in views]
    n_merged = []
    for ax_row, layer in zip(axes, layers):
        kept = torch.zeros(n + 1, dtype=torch.bool)       # the last entry: cells no token covers
        merged = torch.zeros(n + 1, dtype=torch.bool)
        idx = stats.kept_image_indices[layer][0].cpu()
        kept[idx[idx >= 0]] = True
        if layer in stats.merged:
            m = stats.merged[layer][0].cpu()
            merged[idx[(idx >= 0) & m]] = True
        n_merged.append(int(merged.sum()))
        for ax, view, grey, tint in zip(ax_row, views, greys, tints):
            shown, (rows, cols) = view.pixels, view.cells.shape
            where = np.where(view.cells >= 0, view.cells, n)
            cell, mcell = kept.numpy()[where], merged.numpy()[where]
            ys = (np.arange(shown.shape[0]) * rows // shown.shape[0]).clip(0, rows - 1)
            xs = (np.arange(shown.shape[1]) * cols // shown.shape[1]).clip(0, cols - 1)
            picture = np.where(cell[ys][:, xs][..., None], shown, grey)
            ax.imshow(np.where(mcell[ys][:, xs][..., None], tint, picture))
            merged_text = f", {int(mcell.sum())} merged (orange)" if mcell.any() else ""
            head = f"{view.title + ', ' if view.title else ''}layer {layer}"
            ax.set_title(f"{head}: {int(cell.sum())}/{cell.size} kept{merged_text}", fontsize=8)
            ax.axis("off")
    fig.suptitle(f"{cfg.tag()}  |  Q: {question}", fontsize=9)
    fig.text(0.5, 0.02, f"unpruned: {base_answer!r}    pruned: {pruned_answer!r}", ha="center", fontsize=9,
             wrap=True)
    fig.tight_layout(rect=(0, 0.08, 1, 0.92))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, metadata={"Description": f"panels={len(layers)} layers={layers} merged={n_merged} "
                                                       f"views={len(views)}"})
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
        options = dict(parse_option(o) for o in a.option)
        cfg = PruneConfig(a.method, ratio=a.ratio, layer=a.layer, step=None if a.step is None else a.step / 100,
                          seed=a.seed, options=options or None)
    except ValueError as e:
        p.error(str(e))
    try:  # before the model loads, so a wrong path costs no loading time
        image = Image.open(a.image).convert("RGB")
    except OSError as e:  # missing, unreadable or not an image (PIL's UnidentifiedImageError is an OSError)
        p.error(f"--image {a.image}: {e.strerror or e}")
    if not Path(a.out).resolve().parent.is_dir():
        p.error(f"--out {a.out}: the folder {Path(a.out).resolve().parent} does not exist")
    processor, model = load(a.model_path, a.attn_impl)
    layers = render(model, processor, image, a.question, cfg, Path(a.out), a.max_new_tokens, a.system)
    print(f"wrote {a.out}: {len(layers)} panels (layers {layers})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
