"""Train the tiny shapes LLaVA (``checkpoints/tiny-shapes-llava``) from scratch on CPU.

The model is a real ``LlavaForConditionalGeneration`` (CLIP tower, 2-layer MLP projector,
Llama decoder) with the offline WordLevel tokenizer, CLIP processor and LLaVA-1.5 chat
template of ``scripts/tiny/checkpoints.py``; it loads like any llava-hf checkpoint.

Recipe (why: naive joint training from scratch stays at chance, see the model card):

1. Per-patch auxiliary loss.  A linear head on the projector output (the image tokens
   entering the decoder) predicts colour, shape, row and column of the grid cell each
   image token covers.  It is trained alone for ``--vision-steps`` and then kept, with
   weight ``--aux-weight``, next to the language loss, so image tokens stay
   discriminative.
2. Language loss on packed single-turn samples.  Each image carries a dense caption and
   one question of every trained type (``QUESTION_TYPES``).  They share one forward pass: a block attention
   mask and restarted position ids make each question see only the system prompt, the
   image and itself, exactly as in a single-turn evaluation prompt.

CLI::

    # the shipped checkpoint (25 min on the shared 2-core VM):
    python scripts/tiny/train.py --out checkpoints/tiny-shapes-llava --steps 1300 \
        --vision-steps 300 --batch 16 --layers 12 --warmup 50 --aux-weight 1.0 \
        --eval-every 200 --eval-n 96 --threads 1 --seed 0 --time-limit 42
    python scripts/tiny/train.py --quick --out /tmp/tiny-quick   # a few steps, tiny sizes
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

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # scripts/ is not installed: run as a file, import it from the repository root
    sys.path.insert(0, str(REPO))
from scripts.tiny import checkpoints as tc  # noqa: E402
from scripts.tiny import scenes as sc  # noqa: E402

# LLaVA-1.5's system prompt, which the VLMEvalKit llava wrapper puts first.
SYSTEM_PROMPT = ("A chat between a curious human and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the human's questions.")
_PLACEHOLDER = "QQQPLACEHOLDERQQQ"
# Scene seeds: training draws seed * TRAIN_SEED_STRIDE + k (k = running sample index);
# the in-training validation uses HELD_OUT_SEED_START + VALID_OFFSET + i.
TRAIN_SEED_STRIDE = 10**8
VALID_OFFSET = 5_000_000
AUX_CLASSES = (len(sc.COLOURS) + 1, len(sc.SHAPES) + 1, sc.GRID, sc.GRID)


def build_model(*, layers, hidden, vision_hidden, vision_layers, image_size, seed):
    """Fresh ``(processor, model)``; vision features from the tower's last layer."""
    from transformers import LlavaForConditionalGeneration

    tok = tc.tiny_llava_tokenizer()
    config = tc.tiny_llava_config(image_size=image_size, num_layers=layers, hidden_size=hidden,
                                  tokenizer=tok, vision_hidden=vision_hidden,
                                  vision_layers=vision_layers, vision_feature_layer=-1)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(torch.float32)
    return tc.tiny_llava_processor(tok, image_size), model


class Packer:
    """Token ids of the chat-template prompt, split around the user text."""

    def __init__(self, processor, n_image: int, system: str | None = SYSTEM_PROMPT):
        self.tok = processor.tokenizer
        messages = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": _PLACEHOLDER}]}]
        if system:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        head, tail = text.split(_PLACEHOLDER)
        head = head.replace(self.tok.image_token, self.tok.image_token * n_image)
        self.prefix = self.tok(head)["input_ids"]  # starts with <s>
        self.tail = self.tok(tail, add_special_tokens=False)["input_ids"]  # "ASSISTANT :"
        self.eos = self.tok.eos_token_id
        self.messages = messages

    def segment(self, prompt: str, answer: str | None):
        """(ids, labels) of one question; labels are -100 except answer tokens and EOS."""
        q = self.tok(prompt, add_special_tokens=False)["input_ids"] + self.tail
        if answer is None:
            return q, [-100] * len(q)
        a = self.tok(answer, add_special_tokens=False)["input_ids"] + [self.eos]
        ids = q + a
        # Shifted per segment here, not by the model (it is called without labels): in a packed row a global
        # shift would make one segment's last token predict the next segment's first. The loss and the
        # validation then read logits[t] against labels[t].
        labels = [-100] * (len(q) - 1) + a + [-100]
        return ids, labels

    def pack(self, samples):
        """Batch of images, each with a list of (prompt, answer) segments (see :func:`pack_rows`)."""
        rows = [(self.prefix, [self.segment(prompt, answer) for prompt, answer in segs]) for segs in samples]
        return pack_rows(rows, self.tok.pad_token_id)[:4]


def pack_rows(rows, pad: int):
    """Rows of (prefix ids, [(segment ids, labels)]) as one batch.

    Returns input_ids, labels, position_ids, an additive 4D mask in which every segment attends to its row's
    prefix and causally to itself only, and the segment index of every position (0 prefix, -1 padding).
    """
    packed = []
    for prefix, segs in rows:
        ids, labels, pos, seg_id = list(prefix), [-100] * len(prefix), list(range(len(prefix))), [0] * len(prefix)
        for j, (s_ids, s_lab) in enumerate(segs, start=1):
            ids += s_ids
            labels += s_lab
            pos += list(range(len(prefix), len(prefix) + len(s_ids)))
            seg_id += [j] * len(s_ids)
        packed.append((ids, labels, pos, seg_id))
    length = max(len(r[0]) for r in packed)
    B = len(packed)
    input_ids = torch.full((B, length), pad, dtype=torch.long)
    labels = torch.full((B, length), -100, dtype=torch.long)
    position_ids = torch.zeros((B, length), dtype=torch.long)
    seg = torch.full((B, length), -1, dtype=torch.long)
    for b, (i, lab, p, s) in enumerate(packed):
        n = len(i)
        input_ids[b, :n], labels[b, :n] = torch.tensor(i), torch.tensor(lab)
        position_ids[b, :n], seg[b, :n] = torch.tensor(p), torch.tensor(s)
    q, k = seg[:, :, None], seg[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = causal & ((k == 0) | (k == q)) & (k >= 0)
    allowed |= torch.eye(length, dtype=torch.bool)  # padding rows attend to themselves
    mask = torch.zeros((B, 1, length, length))
    mask.masked_fill_(~allowed[:, None], torch.finfo(torch.float32).min)
    return input_ids, labels, position_ids, mask, seg


def scene_batch(seeds, image_size, with_caption=True, qtypes=None):
    """Images, per-image segments and per-patch targets for the given scene seeds."""
    images, samples, targets = [], [], []
    pps = image_size // 14
    for s in seeds:
        rng = sc.scene_rng(s)
        scene = sc.random_scene(rng)
        segs = []
        for qtype in (qtypes or sc.QUESTION_TYPES):
            row = sc.make_question(rng, scene, qtype)
            segs.append((row["prompt"], row["answer"]))
        if with_caption:
            segs.append((sc.CAPTION_PROMPT, sc.caption(scene, rng)))
        images.append(sc.draw_scene(scene, image_size))
        samples.append(segs)
        targets.append(sc.patch_targets(scene, pps))
    return images, samples, torch.tensor(targets)


class Trainer:
    def __init__(self, processor, model, args):
        self.processor, self.model, self.args = processor, model, args
        cfg = model.config
        self.n_image = cfg.image_seq_length
        self.packer = Packer(processor, self.n_image)
        hidden = cfg.text_config.hidden_size
        self.aux_head = torch.nn.Linear(hidden, sum(AUX_CLASSES))
        self._feats = None
        model.model.multi_modal_projector.register_forward_hook(
            lambda m, i, o: setattr(self, "_feats", o))
        params = list(model.parameters()) + list(self.aux_head.parameters())
        self.opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
        self.params = params

    def pixels(self, images):
        return self.processor.image_processor(images, return_tensors="pt")["pixel_values"]

    def aux_loss(self, targets):
        """Cross-entropy of the per-patch head over the 4 attributes; also accuracy."""
        logits = self.aux_head(self._feats).split(AUX_CLASSES, dim=-1)
        losses, correct = [], []
        for j, lg in enumerate(logits):
            losses.append(F.cross_entropy(lg.flatten(0, 1), targets[..., j].flatten()))
            correct.append((lg.argmax(-1) == targets[..., j]).float().mean())
        return sum(losses) / len(losses), float(sum(correct) / len(correct))

    def lr_at(self, step):
        a = self.args
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        t = (step - a.warmup) / max(1, a.steps - a.warmup)
        return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))

    @torch.enable_grad()  # importing vlmeval turns autograd off process-wide; training must not depend on that
    def step(self, step, seeds, vision_only):
        a = self.args
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(step)
        qtypes = list(sc.QUESTION_TYPES) + list(a.extra_types)
        images, samples, targets = scene_batch(seeds, a.image_size, qtypes=qtypes)
        pixel_values = self.pixels(images)
        if vision_only:
            self.model.model.get_image_features(pixel_values=pixel_values)
            aux, acc = self.aux_loss(targets)
            loss, lm = aux, float("nan")
        else:
            input_ids, labels, position_ids, mask = self.packer.pack(samples)
            out = self.model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=mask,
                             position_ids=position_ids)
            lm_loss = F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
            aux, acc = self.aux_loss(targets)
            loss, lm = lm_loss + a.aux_weight * aux, float(lm_loss.detach())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        return dict(loss=float(loss.detach()), lm=lm, aux=float(aux.detach()), patch_acc=acc)

    @torch.no_grad()
    def validate(self, n):
        """Teacher-forced held-out accuracy per type: every shipped answer is one token
        then EOS, so the argmax after "ASSISTANT:" is the greedy answer."""
        self.model.eval()
        types = list(sc.QUESTION_TYPES)
        hits = {t: [0, 0] for t in types}
        seeds = [sc.HELD_OUT_SEED_START + VALID_OFFSET + i for i in range(n)]
        for start in range(0, n, 32):
            chunk = seeds[start:start + 32]
            images, samples, _ = scene_batch(chunk, self.args.image_size, with_caption=False)
            input_ids, labels, position_ids, mask = self.packer.pack(samples)
            out = self.model(input_ids=input_ids, pixel_values=self.pixels(images),
                             attention_mask=mask, position_ids=position_ids)
            pred = out.logits.argmax(-1)
            for b in range(len(chunk)):
                first = [t for t in range(labels.shape[1]) if labels[b, t] >= 0
                         and (t == 0 or labels[b, t - 1] < 0)]
                for qtype, t in zip(types, first):
                    hits[qtype][0] += int(pred[b, t] == labels[b, t])
                    hits[qtype][1] += 1
        self.model.train()
        acc = {t: h / max(c, 1) for t, (h, c) in hits.items()}
        acc["mean"] = sum(acc.values()) / len(types)
        return acc


def save(processor, model, out_dir, meta):
    """fp16 weights, processor, short generation config and a training stamp."""
    from transformers import GenerationConfig

    tok = processor.tokenizer
    model.generation_config = GenerationConfig(
        max_new_tokens=4, do_sample=False, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out)
    model.to(torch.float32)
    processor.save_pretrained(out)
    (out / "training_log.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=3000, help="joint (language + aux) steps")
    p.add_argument("--vision-steps", type=int, default=300, help="aux-only steps first")
    p.add_argument("--batch", type=int, default=32, help="images per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--aux-weight", type=float, default=0.5)
    p.add_argument("--layers", type=int, default=14)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--vision-hidden", type=int, default=128)
    p.add_argument("--vision-layers", type=int, default=2)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-n", type=int, default=192, help="held-out images per evaluation")
    p.add_argument("--time-limit", type=float, default=0, help="stop joint training after this many minutes (0: off)")
    p.add_argument("--extra-types", nargs="*", default=[], choices=list(sc.QUESTION_TYPES),
                   help="extra questions of these types per image (oversample slow types)")
    p.add_argument("--init", help="start from this checkpoint instead of random weights "
                   "(the aux head starts fresh: give a few --vision-steps)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and a few steps (tests)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.vision_steps, args.batch, args.layers = 3, 2, 4, 2
        args.hidden = args.vision_hidden = 32
        args.eval_every, args.eval_n, args.warmup = 3, 8, 1
    if args.seed >= 10:
        raise ValueError("--seed must be < 10 so training scene seeds stay below the held-out range")
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    from tqdm import tqdm

    if args.init:  # continue from a saved checkpoint (fp16 on disk, trained in fp32)
        processor, model = tc.load_tiny(args.init)
        torch.manual_seed(args.seed)
    else:
        processor, model = build_model(layers=args.layers, hidden=args.hidden,
                                       vision_hidden=args.vision_hidden,
                                       vision_layers=args.vision_layers,
                                       image_size=args.image_size, seed=args.seed)
    model.train()
    trainer = Trainer(processor, model, args)
    total = args.vision_steps + args.steps
    log, t0, k = [], time.time(), args.seed * TRAIN_SEED_STRIDE
    bar = tqdm(range(total), desc="train", dynamic_ncols=True, mininterval=10)
    for i in bar:
        vision_only = i < args.vision_steps
        seeds = list(range(k, k + args.batch))
        k += args.batch
        m = trainer.step(i - args.vision_steps if not vision_only else i, seeds, vision_only)
        bar.set_postfix(lm=f"{m['lm']:.3f}", aux=f"{m['aux']:.3f}", patch=f"{m['patch_acc']:.3f}",
                        refresh=False)  # refresh=False: redraw at mininterval only
        last = i == total - 1
        over = args.time_limit and (time.time() - t0) > args.time_limit * 60
        if not vision_only and ((i - args.vision_steps + 1) % args.eval_every == 0 or last or over):
            acc = trainer.validate(args.eval_n)
            entry = dict(step=i + 1, minutes=round((time.time() - t0) / 60, 2), **m,
                         **{f"val_{t}": round(v, 4) for t, v in acc.items()})
            log.append(entry)
            tqdm.write(json.dumps(entry))
        if over:
            tqdm.write(f"time limit reached after {i + 1} steps")
            break
    model.eval()
    meta = dict(args=vars(args), minutes=round((time.time() - t0) / 60, 2), log=log)
    if args.init:  # keep the earlier stage's log next to this one
        prev = pathlib.Path(args.init) / "training_log.json"
        if prev.is_file():
            meta["previous"] = json.loads(prev.read_text())
    save(processor, model, args.out, meta)
    print(f"saved {args.out} after {meta['minutes']} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
