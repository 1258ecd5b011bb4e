"""A synthetic MileBench-format benchmark of coloured shapes, for the offline demo (``eval/MileBench/demo_tiny.sh``).

Three sets in MileBench's layout (``<root>/<Dataset>/<Dataset>.json`` and ``images/``), 2-8 images per sample:
``SynthShapesMCQ`` (multiple choice: which image shows a given shape and colour), ``SynthShapesOpen``
(open-ended: the colour of the shape in image i) and ``SynthTextNeedleInAHaystack`` (needle: a word hidden in a
long text between the images; the name makes ``evaluate.py`` score it as a needle set).
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


def _draw(path: Path, shape: str, colour: str, size: int = 112) -> None:
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
    im.save(path)


def _level(n: int) -> str:
    return "Few" if n < 6 else "Many" if n > 31 else "Medium"


def _images(rng: random.Random, folder: Path, sid: int, n: int) -> List[tuple]:
    out = []
    for k in range(n):
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        name = f"{sid}_{k}.png"
        _draw(folder / name, shape, colour)
        out.append((name, shape, colour))
    return out


def write_benchmark(root, n: int = 12, seed: int = 0) -> Dict[str, int]:
    """Write the three sets under ``root`` (``n`` samples each); return {dataset: samples}."""
    rng = random.Random(seed)
    root = Path(root)
    made = {}
    for ds, instruction in INSTRUCTIONS.items():
        folder = root / ds / "images"
        folder.mkdir(parents=True, exist_ok=True)
        data = []
        for sid in range(n):
            count = rng.randint(2, 8)
            imgs = _images(rng, folder, sid, count)
            refs = " ".join(f"{{image#{k + 1}}}" for k in range(count))
            inst = {"images_path": [name for name, _, _ in imgs]}
            if ds == "SynthShapesMCQ":
                pick = rng.randrange(count)
                _, shape, colour = imgs[pick]
                inst["context"] = f"{refs} Which image shows a {colour} {shape}?"
                inst["choice_list"] = [f"image {k + 1}" for k in range(count)]
                response = f"image {pick + 1}"
            elif ds == "SynthShapesOpen":
                pick = rng.randrange(count)
                inst["context"] = f"{refs} What colour is the shape in image {pick + 1}?"
                response = imgs[pick][2]
            else:
                secret = rng.choice(list(COLOURS))
                hay = [" ".join(rng.choice(WORDS) for _ in range(30)) for _ in range(count + 1)]
                hay[rng.randrange(len(hay))] += f" the secret word is {secret}."
                inst["context"] = "".join(f"{h} {{image#{k + 1}}} " for k, h in enumerate(hay[:-1])) + hay[-1] + \
                    " What is the secret word?"
                response = secret
            data.append({"sample_id": sid, "task_instruction_id": 0, "task_instance": inst, "response": response,
                         "image_quantity_level": _level(count)})
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
    a = p.parse_args(argv)
    for ds, n in write_benchmark(a.root, a.n, a.seed).items():
        print(f"{ds}\t{n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
