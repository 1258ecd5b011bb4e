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

``write_shapes_benchmarks`` (``--shapes``, prefix ``SeqPruneShapes``) writes the benchmark
of the trained ``checkpoints/tiny-shapes-llava``: only its shipped question types, from
held-out scene seeds (``scripts/tiny/scenes.py``).

CLI::

    python scripts/tiny/lmudata.py --root ~/LMUData --n 12
    python scripts/tiny/lmudata.py --root ~/LMUData --n 60 --shapes
"""

from __future__ import annotations

import argparse
import base64
import io
import pathlib
import random
import sys

import pandas as pd
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # scripts/ is not installed: run as a file, import it from the repository root
    sys.path.insert(0, str(REPO))
from scripts.tiny import scenes as sc  # noqa: E402
from scripts.tiny.scenes import COLOURS, GRID, SHAPES  # noqa: E402,F401  (re-exported)

# Dataset-name suffix per kind; the VQA one must contain "GQA" (see module docstring).
SUFFIXES = {"MCQ": "_MCQ", "YN": "_YN", "VQA": "_GQA"}
# Scene seeds of write_shapes_benchmarks: held-out, and apart from the study's range.
BENCH_SEED_OFFSET = 2_000_000


# TSV columns per kind (VLMEvalKit's MCQ / Y/N / VQA layouts).
COLUMNS = {"MCQ": ["index", "question", "A", "B", "C", "D", "answer", "image", "category"],
           "YN": ["index", "question", "answer", "image", "category"],
           "VQA": ["index", "question", "answer", "image", "category"]}


def _write_tsv(root: pathlib.Path, name: str, kind: str, rows: list[dict]) -> pathlib.Path:
    path = root / f"{name}.tsv"
    pd.DataFrame(rows, columns=COLUMNS[kind]).to_csv(path, sep="\t", index=False)
    return path


def synthetic_dataset_names(prefix: str = "SeqPruneTiny") -> dict[str, str]:
    """Map kind ("MCQ", "YN", "VQA") to the dataset name used for it."""
    return {kind: prefix + suffix for kind, suffix in SUFFIXES.items()}


# Scenes and drawing live in scripts/tiny/scenes.py, shared with the trained model.
_random_scene = sc.random_scene
_draw = sc.draw_scene


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
        paths[name] = _write_tsv(root, name, kind, rows)
    return paths


def write_shapes_benchmarks(root, *, n=60, seed=0, image_size=112,
                            prefix="SeqPruneShapes") -> dict[str, pathlib.Path]:
    """Benchmarks for the trained ``checkpoints/tiny-shapes-llava``: only its shipped
    question types (``scenes.SHIPPED_TYPES``), cycled per kind.

    Row ``i`` of the kind at position ``o`` (MCQ, YN, VQA) uses scene seed
    ``HELD_OUT_SEED_START + BENCH_SEED_OFFSET + 10_000 * seed + o * n + i``: held out from
    training and apart from ``study.py``'s seeds (needs ``3 * n <= 10_000``).  Kinds
    without a shipped type (currently Y/N) are not written.
    """
    if 3 * n > 10_000:
        raise ValueError(f"n must be <= 3333 so seed ranges do not overlap, got {n}")
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = sc.HELD_OUT_SEED_START + BENCH_SEED_OFFSET + 10_000 * seed
    paths = {}
    for offset, (kind, name) in enumerate(synthetic_dataset_names(prefix).items()):
        types = [t for t, k in sc.SHIPPED_TYPES.items() if k == kind]
        if not types:  # no shipped type of this kind (Y/N): no dataset
            continue
        rows = []
        for i in range(n):
            rng = sc.scene_rng(base + offset * n + i)
            scene = sc.random_scene(rng)
            row = sc.make_question(rng, scene, types[i % len(types)])
            row = {c: row[c] for c in COLUMNS[kind] if c in row}
            row.update(index=i, image=_b64_png(sc.draw_scene(scene, image_size)))
            rows.append(row)
        paths[name] = _write_tsv(root, name, kind, rows)
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
    parser.add_argument("--prefix", default=None,
                        help="dataset-name prefix (default SeqPruneTiny, or SeqPruneShapes with --shapes)")
    parser.add_argument("--shapes", action="store_true",
                        help="benchmark of the trained tiny-shapes-llava (its shipped types only)")
    args = parser.parse_args(argv)
    if args.shapes:
        paths = write_shapes_benchmarks(args.root, n=args.n, seed=args.seed,
                                        image_size=args.image_size,
                                        prefix=args.prefix or "SeqPruneShapes")
    else:
        paths = write_synthetic_benchmarks(args.root, n=args.n, seed=args.seed,
                                           image_size=args.image_size,
                                           prefix=args.prefix or "SeqPruneTiny")
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
