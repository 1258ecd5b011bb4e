"""Tiny synthetic VLMEvalKit benchmarks (MCQ, Yes/No, short-answer VQA) for offline runs.

Images are coloured shapes on a 4x4 grid over a plain background; questions ask about
colour, shape, count and existence.  Everything is deterministic from ``seed``.

Dataset names (``prefix`` defaults to ``SeqPruneTiny``):

* ``{prefix}_MCQ`` -> ``ImageMCQDataset`` (answer is a letter, options A-D);
* ``{prefix}_YN``  -> ``ImageYORNDataset`` (answer "Yes"/"No");
* ``{prefix}_GQA`` -> ``ImageVQADataset`` (one-word answer).  The "GQA" in the name is
  deliberate: ``ImageVQADataset.evaluate`` picks its metric from the dataset name, and
  only names containing "GQA" (or "OCRVQA", which also redirects the image folder) get
  plain case-insensitive exact-match accuracy.  Any other name gets the leave-one-out
  VQA score, which is always 0 with a single reference answer.

vlmeval only knows these names after :func:`register_synthetic_datasets` (call it in
every process that builds or evaluates them).

CLI::

    python scripts/synthetic_lmudata.py --root ~/LMUData --n 12
"""

from __future__ import annotations

import argparse
import base64
import io
import math
import pathlib
import random
import sys

import pandas as pd
from PIL import Image, ImageDraw

# Dataset-name suffix per kind; the VQA one must contain "GQA" (see module docstring).
SUFFIXES = {"MCQ": "_MCQ", "YN": "_YN", "VQA": "_GQA"}
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220),
           "yellow": (240, 210, 20), "purple": (140, 50, 170), "orange": (250, 140, 20)}
SHAPES = ("circle", "square", "triangle", "star")
GRID = 4
BACKGROUND = (235, 235, 235)
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}


def synthetic_dataset_names(prefix: str = "SeqPruneTiny") -> dict[str, str]:
    """Map kind ("MCQ", "YN", "VQA") to the dataset name used for it."""
    return {kind: prefix + suffix for kind, suffix in SUFFIXES.items()}


def _random_scene(rng: random.Random) -> list[dict]:
    """1-4 objects, each with a distinct shape and colour, in distinct grid cells.

    Distinct shapes and colours keep "the circle" / "the red shape" unambiguous.
    """
    k = rng.randint(1, len(SHAPES))
    shapes = rng.sample(SHAPES, k)
    colours = rng.sample(sorted(COLOURS), k)
    cells = rng.sample(range(GRID * GRID), k)
    return [dict(shape=s, colour=c, cell=cell) for s, c, cell in zip(shapes, colours, cells)]


def _draw(scene: list[dict], image_size: int) -> Image.Image:
    img = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    cell = image_size / GRID
    for obj in scene:
        row, col = divmod(obj["cell"], GRID)
        x0, y0 = col * cell + cell * 0.15, row * cell + cell * 0.15
        x1, y1 = (col + 1) * cell - cell * 0.15, (row + 1) * cell - cell * 0.15
        fill = COLOURS[obj["colour"]]
        if obj["shape"] == "circle":
            draw.ellipse([x0, y0, x1, y1], fill=fill)
        elif obj["shape"] == "square":
            draw.rectangle([x0, y0, x1, y1], fill=fill)
        elif obj["shape"] == "triangle":
            draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
        else:  # five-pointed star
            draw.polygon(_star_points((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2), fill=fill)
    return img


def _star_points(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.45
        angle = -math.pi / 2 + i * math.pi / 5
        pts.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return pts


def _b64_png(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _question(rng: random.Random, scene: list[dict]) -> tuple[str, str, str, list[str]]:
    """Return (category, question, answer, distractor pool) for an open question."""
    obj = rng.choice(scene)
    kind = rng.choice(("colour", "shape", "count"))
    if kind == "colour":
        return kind, f"What colour is the {obj['shape']}?", obj["colour"], sorted(COLOURS)
    if kind == "shape":
        return kind, f"What shape is the {obj['colour']} object?", obj["shape"], list(SHAPES)
    return kind, "How many shapes are there in the image?", str(len(scene)), ["1", "2", "3", "4"]


def _mcq_row(rng, scene):
    category, question, answer, pool = _question(rng, scene)
    options = [answer] + rng.sample([x for x in pool if x != answer], 3)
    rng.shuffle(options)
    row = dict(question=question, category=category, answer="ABCD"[options.index(answer)])
    row.update(zip("ABCD", options))
    return row


def _yn_row(rng, scene, want_yes: bool):
    if want_yes:
        obj = rng.choice(scene)
        colour, shape = obj["colour"], obj["shape"]
    else:  # a colour-shape pair that is absent from the scene
        present = {(o["colour"], o["shape"]) for o in scene}
        colour, shape = rng.choice(
            [(c, s) for c in sorted(COLOURS) for s in SHAPES if (c, s) not in present])
    article = "an" if colour[0] in "aeiou" else "a"
    return dict(question=f"Is there {article} {colour} {shape} in the image?",
                answer="Yes" if want_yes else "No", category="existence")


def _vqa_row(rng, scene):
    category, question, answer, _ = _question(rng, scene)
    return dict(question=question, answer=answer, category=category)


def write_synthetic_benchmarks(root, *, n=12, seed=1000, image_size=112,
                               prefix="SeqPruneTiny") -> dict[str, pathlib.Path]:
    """Write ``n``-row MCQ, Y/N and VQA TSVs into the LMUData directory ``root``.

    Returns a mapping dataset name -> TSV path; names come from
    :func:`synthetic_dataset_names`.  Y/N answers alternate Yes/No (balanced).
    """
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    columns = {"MCQ": ["index", "question", "A", "B", "C", "D", "answer", "image", "category"],
               "YN": ["index", "question", "answer", "image", "category"],
               "VQA": ["index", "question", "answer", "image", "category"]}
    paths = {}
    for offset, (kind, name) in enumerate(synthetic_dataset_names(prefix).items()):
        rng = random.Random(seed * 10 + offset)  # independent, reproducible stream per kind
        rows = []
        for i in range(n):
            scene = _random_scene(rng)
            if kind == "MCQ":
                row = _mcq_row(rng, scene)
            elif kind == "YN":
                row = _yn_row(rng, scene, want_yes=i % 2 == 0)
            else:
                row = _vqa_row(rng, scene)
            row.update(index=i, image=_b64_png(_draw(scene, image_size)))
            rows.append(row)
        path = root / f"{name}.tsv"
        pd.DataFrame(rows, columns=columns[kind]).to_csv(path, sep="\t", index=False)
        paths[name] = path
    return paths


def register_synthetic_datasets(names) -> None:
    """Make vlmeval treat ``names`` as local MCQ / Y/N / VQA datasets, offline.

    The kind is read from the name suffix (``_MCQ``, ``_YN``, ``_GQA``).  Each name is
    added to the matching vlmeval class with an empty URL and no md5, so the class loads
    ``$LMUData/<name>.tsv`` without network access and ``DATASET_TYPE`` is right.
    """
    from vlmeval.dataset import ImageMCQDataset, ImageVQADataset, ImageYORNDataset

    classes = {"MCQ": ImageMCQDataset, "YN": ImageYORNDataset, "VQA": ImageVQADataset}
    for name in names:
        kind = next((k for k, suffix in SUFFIXES.items() if name.endswith(suffix)), None)
        if kind is None:
            raise ValueError(f"{name!r} does not end with one of {sorted(SUFFIXES.values())}")
        cls = classes[kind]
        cls.DATASET_URL[name] = ""
        cls.DATASET_MD5.pop(name, None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--root", required=True, help="LMUData directory to write into")
    parser.add_argument("--n", type=int, default=12, help="rows per dataset")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--prefix", default="SeqPruneTiny")
    args = parser.parse_args(argv)
    paths = write_synthetic_benchmarks(args.root, n=args.n, seed=args.seed,
                                       image_size=args.image_size, prefix=args.prefix)
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
