"""Train the tiny shapes LLaVA further on multi-image MileBench questions (``checkpoints/tiny-shapes-llava-multi``).

Starts from ``checkpoints/tiny-shapes-llava`` (one-image questions, ``train.py``) and trains on samples of the
synthetic MileBench sets of ``SequentialPrune/frontends/milebench/synthetic.py`` (drawn by its ``make_sample``
from seeds the demo never uses).  The token ids are the MileBench front end's own on the paper protocol, which
``eval/MileBench/demo_tiny.sh`` runs: ``prompts.milebench_sample`` (budget: 64 tokens per image, as the demo
passes), ``PaperLlavaInputs.prompt`` (the ``llava_llama_2`` template) and ``chunk_token_ids``; the pixels are its
padding image processor's.  So a model trained here sees at evaluation exactly the prompts it was trained on
(``tests/scripts/test_tiny_model.py`` compares them with the front end's inputs of a written sample).

Recipe:

* one row per image set; every question about it (MCQ: which image shows a colour-shape pair; open-ended: the
  colour in image i; needle: the secret word) is a segment after the last image, packed with the block mask
  and restarted positions of ``train.pack_rows``, so each one sees exactly its own evaluation prompt; all rows
  of a step have the same number of images (2-8, drawn per step), so none is padded;
* loss on the answer tokens (``image 3``, ``red``) and EOS, plus two auxiliary heads (not saved): colour and shape
  per image token at the projector output, and each image token's image index (1-8) at decoder layer
  ``--index-layer``, which the questions about "image i" need and a from-scratch causal decoder finds slowly.

CLI::

    python -m scripts.tiny.train_multi --out checkpoints/tiny-shapes-llava-multi --steps 1100 --threads 1
    python -m scripts.tiny.train_multi --quick --out /tmp/multi-quick   # a few steps (tests)

(from the repository root: ``scripts`` is not an installed package). The shipped checkpoint's run, its
validation log and what it did not learn: ``checkpoints/tiny-shapes-llava-multi/README.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import random
import sys
import time

import torch
import torch.nn.functional as F

from scripts.tiny import checkpoints as tc
from scripts.tiny import train as tr
from SequentialPrune.evaluation.protocols.paper_llava import chunk_token_ids
from SequentialPrune.frontends.milebench import synthetic as syn
from SequentialPrune.frontends.milebench.inputs import PaperLlavaInputs, open_image
from SequentialPrune.frontends.milebench.prompts import Budget, milebench_sample

REPO = pathlib.Path(__file__).resolve().parents[2]
DATASETS = tuple(syn.INSTRUCTIONS)
# Training rows use random.Random(TRAIN_SEED_BASE + 10**8 * seed + k), validation VALID_SEED_BASE + i; the demo's
# set is one stream random.Random(small seed), so they never share a stream.
TRAIN_SEED_BASE = 10**10
VALID_SEED_BASE = 2 * 10**10
MAX_IMAGES = 8
AUX_CLASSES = (len(syn.COLOURS) + 1, len(syn.SHAPES) + 1)


class MultiRows:
    """The front end's paper-protocol ids of synthetic samples, split into a shared prefix and one segment per
    question."""

    def __init__(self, processor, n_image: int, max_images: int = MAX_IMAGES):
        self.inputs = PaperLlavaInputs(processor, "", "checkpoint")  # the checkpoint's own tokenizer (no .model)
        self.tok = processor.tokenizer
        self.n_image, self.max_images = n_image, max_images
        self.budget = Budget(n_tokens_per_image=n_image)

    def ids(self, entry: dict, dataset: str) -> list[int]:
        """The ids ``PaperLlavaInputs`` gives sample ``entry`` (without reading its images)."""
        sample = milebench_sample(entry, [syn.INSTRUCTIONS[dataset]], pathlib.Path("."), dataset,
                                  self.inputs.text_tokenizer, self.budget)
        counts = [self.n_image] * len(sample.images)
        return chunk_token_ids(self.inputs.prompt(sample, dataset), self.inputs.paper.encode,
                               self.tok.bos_token_id, self.inputs.image_id, counts)

    def pixels(self, images) -> torch.Tensor:
        return self.inputs.paper.images(images=[open_image(i) for i in images], return_tensors="pt")["pixel_values"]

    def row(self, rng: random.Random, dataset: str, questions: int, n_images: int | None = None):
        """(prefix ids, [(segment ids, answer)], images, pairs) of one drawn sample (of ``n_images`` images, else
        2 to ``max_images``) with up to ``questions`` questions (MCQ and open-ended: any of its images)."""
        lo, hi = (n_images, n_images) if n_images else (2, self.max_images)
        entry, imgs = syn.make_sample(rng, dataset, 0, min_images=lo, max_images=hi)
        pairs = [(s, c) for _, s, c in imgs]
        variants = [entry]
        if dataset != DATASETS[2]:  # the needle set has one question per sample
            picks = rng.sample(range(len(pairs)), min(questions, len(pairs)))
            variants = []
            for pick in picks:
                e = json.loads(json.dumps(entry))
                inst = e["task_instance"]
                inst["context"], choices, e["response"] = syn.question(dataset, pairs, pick)
                if choices:
                    inst["choice_list"] = choices
                variants.append(e)
        prefix, segs = None, []
        for e in variants:
            ids = self.ids(e, dataset)
            cut = max(i for i, t in enumerate(ids) if t == self.inputs.image_id) + 1
            if prefix is None:
                prefix = ids[:cut]
            if ids[:cut] != prefix:
                raise AssertionError("questions about one image set must share the prompt up to the last image")
            segs.append((ids[cut:], str(e["response"])))
        images = [syn.draw(s, c) for s, c in pairs]
        return prefix, segs, images, pairs

    def segment(self, q: list[int], answer: str | None):
        """(ids, labels) as ``train.Packer.segment``: labels on the answer tokens and EOS, shifted per segment."""
        if answer is None:
            return q, [-100] * len(q)
        a = self.tok(answer, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
        return q + a, [-100] * (len(q) - 1) + a + [-100]


def patch_targets(pairs, patches_per_side: int) -> list[list[tuple[int, int]]]:
    """Per image, per patch: (colour, shape) class, 0 outside the shape's box (the middle half of each side)."""
    lo, hi = patches_per_side // 4, patches_per_side - patches_per_side // 4
    out = []
    for shape, colour in pairs:
        c, s = list(syn.COLOURS).index(colour) + 1, syn.SHAPES.index(shape) + 1
        out.append([(c, s) if lo <= r < hi and lo <= k < hi else (0, 0)
                    for r in range(patches_per_side) for k in range(patches_per_side)])
    return out


class MultiTrainer:
    def __init__(self, processor, model, args):
        self.processor, self.model, self.args = processor, model, args
        cfg = model.config
        self.n_image = cfg.image_seq_length
        self.rows = MultiRows(processor, self.n_image, args.max_images)
        hidden = cfg.text_config.hidden_size
        self.aux_head = torch.nn.Linear(hidden, sum(AUX_CLASSES))
        self.index_head = torch.nn.Linear(hidden, args.max_images)
        self._feats = None
        model.model.multi_modal_projector.register_forward_hook(lambda m, i, o: setattr(self, "_feats", o))
        self.params = list(model.parameters()) + list(self.aux_head.parameters()) + \
            list(self.index_head.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))

    def batch(self, seeds, dataset, questions, n_images=None):
        rows, images, pairs = [], [], []
        for s in seeds:
            prefix, segs, imgs, prs = self.rows.row(random.Random(s), dataset, questions, n_images)
            rows.append((prefix, [self.rows.segment(q, a) for q, a in segs]))
            images += imgs
            pairs += prs
        input_ids, labels, position_ids, mask, seg = tr.pack_rows(rows, self.processor.tokenizer.pad_token_id)
        targets = torch.tensor(patch_targets(pairs, int(math.isqrt(self.n_image))))
        return input_ids, labels, position_ids, mask, seg, self.rows.pixels(images), targets

    def index_targets(self, input_ids):
        """Each image token's image index in its row (0-based), -100 elsewhere."""
        is_img = input_ids == self.rows.inputs.image_id
        idx = (is_img.cumsum(1) - 1) // self.n_image
        return torch.where(is_img, idx, torch.full_like(idx, -100))

    def forward(self, input_ids, position_ids, mask, pixels):
        return self.model(input_ids=input_ids, pixel_values=pixels, attention_mask=mask, position_ids=position_ids,
                          output_hidden_states=True)

    lr_at = tr.Trainer.lr_at  # the one-image stage's schedule: linear warmup, cosine to a tenth

    @torch.enable_grad()  # importing vlmeval turns autograd off process-wide
    def step(self, step, seeds, dataset, n_images):
        a = self.args
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(step)
        input_ids, labels, position_ids, mask, _, pixels, targets = self.batch(seeds, dataset, a.questions, n_images)
        out = self.forward(input_ids, position_ids, mask, pixels)
        lm = F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        logits = self.aux_head(self._feats).split(AUX_CLASSES, dim=-1)
        aux = sum(F.cross_entropy(lg.flatten(0, 1), targets[..., j].flatten()) for j, lg in enumerate(logits)) / 2
        index = F.cross_entropy(self.index_head(out.hidden_states[a.index_layer]).flatten(0, 1),
                                self.index_targets(input_ids).flatten(), ignore_index=-100)
        loss = lm + a.aux_weight * aux + a.index_weight * index
        if a.deep_weight:  # the answer read out already at a middle layer: a shorter path for the gradient
            inner = self.model.model.language_model
            deep = self.model.lm_head(inner.norm(out.hidden_states[a.deep_layer]))
            loss = loss + a.deep_weight * F.cross_entropy(deep.flatten(0, 1), labels.flatten(), ignore_index=-100)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        return dict(loss=float(loss.detach()), lm=float(lm.detach()), aux=float(aux.detach()),
                    index=float(index.detach()))

    @torch.no_grad()
    def validate(self, n):
        """Teacher-forced exact match per set: a question is right when every answer token and EOS is the argmax
        (then greedy decoding gives that answer)."""
        self.model.eval()
        acc = {}
        for d, ds in enumerate(DATASETS):
            hits = total = 0
            for start in range(0, n, 16):
                seeds = [VALID_SEED_BASE + 10**6 * d + i for i in range(start, min(n, start + 16))]
                input_ids, labels, position_ids, mask, seg, pixels, _ = self.batch(seeds, ds, 1)
                pred = self.forward(input_ids, position_ids, mask, pixels).logits.argmax(-1)
                ok = (pred == labels) | (labels < 0)
                for b in range(len(seeds)):
                    for j in seg[b][labels[b] >= 0].unique().tolist():
                        sel = (seg[b] == j) & (labels[b] >= 0)
                        hits += int(ok[b][sel].all())
                        total += 1
            acc[ds] = hits / max(total, 1)
        self.model.train()
        return acc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--out", required=True)
    p.add_argument("--init", default=str(REPO / "checkpoints" / "tiny-shapes-llava"),
                   help="the checkpoint to start from")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=12, help="image sets per step")
    p.add_argument("--questions", type=int, default=4, help="questions per image set (MCQ, open-ended)")
    p.add_argument("--max-images", type=int, default=MAX_IMAGES, help="images per sample, 2 to this")
    p.add_argument("--mix", nargs=3, type=float, default=[0.45, 0.45, 0.1], metavar=("MCQ", "OPEN", "NEEDLE"),
                   help="share of steps on each set")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--aux-weight", type=float, default=0.5)
    p.add_argument("--index-weight", type=float, default=0.5)
    p.add_argument("--index-layer", type=int, default=3, help="decoder layer whose output predicts the image index")
    p.add_argument("--deep-layer", type=int, default=8, help="decoder layer whose output also predicts the answer")
    p.add_argument("--deep-weight", type=float, default=0.0, help="weight of that loss (0: off)")
    p.add_argument("--curriculum", type=int, default=0,
                   help="steps over which the most images per sample grows from 2 to --max-images (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-n", type=int, default=48, help="held-out samples per set per evaluation")
    p.add_argument("--time-limit", type=float, default=0, help="stop after this many minutes (0: off)")
    p.add_argument("--quick", action="store_true", help="a few small steps (tests)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.eval_every, args.eval_n, args.warmup = 3, 2, 3, 2, 1
        args.max_images = min(args.max_images, 3)
    if not 2 <= args.max_images <= MAX_IMAGES:
        raise ValueError(f"--max-images must be 2-{MAX_IMAGES}")
    torch.set_num_threads(args.threads)
    processor, model = tc.load_tiny(args.init)
    torch.manual_seed(args.seed)
    model.train()
    trainer = MultiTrainer(processor, model, args)
    pick = random.Random(args.seed)
    log, t0, k = [], time.time(), TRAIN_SEED_BASE + 10**8 * args.seed
    for i in range(args.steps):
        dataset = pick.choices(DATASETS, weights=args.mix)[0]
        most = args.max_images if not args.curriculum else \
            min(args.max_images, 2 + (args.max_images - 1) * i // args.curriculum)
        n_images = pick.randint(2, most)  # one image count per step: rows of one length, no padding
        m = trainer.step(i, list(range(k, k + args.batch)), dataset, n_images)
        k += args.batch
        last = i == args.steps - 1
        over = args.time_limit and (time.time() - t0) > args.time_limit * 60
        if (i + 1) % args.eval_every == 0 or last or over:
            acc = trainer.validate(args.eval_n)
            entry = dict(step=i + 1, minutes=round((time.time() - t0) / 60, 2), **m,
                         **{f"val_{d}": round(v, 4) for d, v in acc.items()})
            log.append(entry)
            print(json.dumps(entry), flush=True)
        if over:
            print(f"time limit reached after {i + 1} steps", flush=True)
            break
    model.eval()
    meta = dict(args=vars(args), minutes=round((time.time() - t0) / 60, 2), log=log)
    prev = pathlib.Path(args.init) / "training_log.json"
    if prev.is_file():  # keep the one-image stage's log next to this one
        meta["previous"] = json.loads(prev.read_text())
    tr.save(processor, model, args.out, meta)
    print(f"saved {args.out} after {meta['minutes']} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
