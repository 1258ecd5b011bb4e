"""A synthetic MileBench-format benchmark of coloured shapes, for the offline demo (``eval/MileBench/demo_tiny.sh``).

Three sets in MileBench's layout (``<root>/<Dataset>/<Dataset>.json`` and ``images/``), 2-8 images per sample:
``SynthShapesMCQ`` (multiple choice: which image shows a given shape and colour; the images of one sample show
distinct shape-colour pairs, so exactly one option is right), ``SynthShapesOpen`` (open-ended: the colour of the
shape in image i) and ``SynthTextNeedleInAHaystack`` (needle: a word hidden in a long text between the images; the
name makes ``evaluate.py`` score it as a needle set).

:func:`make_sample` writes one sample's annotation; ``scripts/tiny/train_multi.py`` trains the tiny LLaVA on
samples it draws (from other seeds), so training and the demo share the questions' wording.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Dict, List

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40)}
SHAPES = ("circle", "square", "triangle")
WORDS = "the a shape grid cell colour picture frame row left right top bottom small large".split()
INSTRUCTIONS = {
    "SynthShapesMCQ": "Look at the images and choose the one the question asks for.",
    "SynthShapesOpen": "Look at the images and answer with one word.",
    "SynthTextNeedleInAHaystack": "Read the text and find the secret word hidden in it.",
}


def draw(shape: str, colour: str, size: int = 112):
    """The image of one shape: centred, half the side, on white."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(im)
    box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([(size // 2, size // 4), (size // 4, 3 * size // 4), (3 * size // 4, 3 * size // 4)], fill=fill)
    return im


def _level(n: int) -> str:
    return "Few" if n < 6 else "Many" if n > 31 else "Medium"


def draw_images(rng: random.Random, n: int, distinct: bool = False) -> List[tuple]:
    """``n`` (shape, colour) pairs; ``distinct``: no pair twice (12 pairs, so n <= 12)."""
    if distinct:
        return rng.sample([(s, c) for s in SHAPES for c in COLOURS], n)
    return [(rng.choice(SHAPES), rng.choice(list(COLOURS))) for _ in range(n)]


def question(dataset: str, pairs: List[tuple], pick: int) -> tuple:
    """(context, choice_list or None, response) of an MCQ or open-ended sample asking about image ``pick``."""
    refs = " ".join(f"{{image#{k + 1}}}" for k in range(len(pairs)))
    shape, colour = pairs[pick]
    if dataset == "SynthShapesMCQ":
        return (f"{refs} Which image shows a {colour} {shape}?", [f"image {k + 1}" for k in range(len(pairs))],
                f"image {pick + 1}")
    return f"{refs} What colour is the shape in image {pick + 1}?", None, colour


def make_sample(rng: random.Random, dataset: str, sid: int, min_images: int = 2, max_images: int = 8) -> tuple:
    """(annotation entry, its images' (file name, shape, colour)) of sample ``sid`` of ``dataset``."""
    count = rng.randint(min_images, max_images)
    pairs = draw_images(rng, count, distinct=dataset == "SynthShapesMCQ")
    imgs = [(f"{sid}_{k}.png", shape, colour) for k, (shape, colour) in enumerate(pairs)]
    inst = {"images_path": [name for name, _, _ in imgs]}
    if dataset in ("SynthShapesMCQ", "SynthShapesOpen"):
        inst["context"], choices, response = question(dataset, pairs, rng.randrange(count))
        if choices:
            inst["choice_list"] = choices
    else:
        secret = rng.choice(list(COLOURS))
        hay = [" ".join(rng.choice(WORDS) for _ in range(30)) for _ in range(count + 1)]
        hay[rng.randrange(len(hay))] += f" the secret word is {secret}."
        inst["context"] = "".join(f"{h} {{image#{k + 1}}} " for k, h in enumerate(hay[:-1])) + hay[-1] + \
            " What is the secret word?"
        response = secret
    entry = {"sample_id": sid, "task_instruction_id": 0, "task_instance": inst, "response": response,
             "image_quantity_level": _level(count)}
    return entry, imgs


def write_benchmark(root, n: int = 12, seed: int = 0, max_images: int = 8) -> Dict[str, int]:
    """Write the three sets under ``root`` (``n`` samples each, 2-``max_images`` images); return {dataset: samples}."""
    rng = random.Random(seed)
    root = Path(root)
    made = {}
    for ds, instruction in INSTRUCTIONS.items():
        folder = root / ds / "images"
        folder.mkdir(parents=True, exist_ok=True)
        data = []
        for sid in range(n):
            entry, imgs = make_sample(rng, ds, sid, max_images=max_images)
            for name, shape, colour in imgs:
                draw(shape, colour).save(folder / name)
            data.append(entry)
        qtype = "multi-choice" if ds == "SynthShapesMCQ" else "open-ended"
        (root / ds / f"{ds}.json").write_text(json.dumps(
            {"meta_data": {"task_instruction": [instruction], "question_type": qtype}, "data": data}, indent=1))
        made[ds] = len(data)
    return made


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write a synthetic MileBench-format benchmark of coloured shapes")
    p.add_argument("--root", required=True)
    p.add_argument("--n", type=int, default=12, help="samples per dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-images", type=int, default=8, help="images per sample at most (2 at least)")
    a = p.parse_args(argv)
    if not 2 <= a.max_images <= 12:
        p.error("--max-images must be 2-12 (an MCQ sample's images show distinct pairs of 12)")
    for ds, n in write_benchmark(a.root, a.n, a.seed, a.max_images).items():
        print(f"{ds}\t{n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
