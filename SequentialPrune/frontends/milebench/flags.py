"""The MileBench command line: the original ``generate.py``'s arguments, ours (``--dump-inputs``, the extra sets'
files, the prompt budget), and the pruning flags of the VLMEvalKit front end (its ``flags`` module, aliases of
the original research code included), parsed into one :class:`~SequentialPrune.evaluation.setting.EvalSetting`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional

from SequentialPrune.evaluation.catalog import MODELS
from SequentialPrune.evaluation.setting import EvalSetting
from SequentialPrune.frontends.vlmevalkit.flags import build_parser as pruning_parser
from SequentialPrune.frontends.vlmevalkit.flags import parse_flags

PROG = "generate.py"
# The original's --model_name values (its utils.py name2worker) -> ours.
ORIGINAL_MODEL_NAMES = {"llava-v1.5-7b": "llava_seqprune", "llava-v1.5-13b": "llava_seqprune_13b"}
REFUSED_MODEL_NAMES = {
    "InternVL-LLava-7B": "the original's InternVL worker loads InternVL-Chat-ViT-6B-Vicuna-7B through the LLaVA "
                         "builder, which transformers does not ship; run internvl_seqprune (InternVL3-8B-hf, chat "
                         "template) instead"}


@dataclass(frozen=True)
class MileBenchArgs:
    """What the harness part of the command line asks (the pruning part is the EvalSetting)."""
    base: str                       # our model name
    datasets: List[str]
    data_dir: str
    output_dir: str
    combine_image: Optional[int]
    adv: bool
    overwrite: bool
    max_context_len: int
    n_tokens_per_image: int
    docvqa_ann: Optional[str]
    docvqa_img_dir: Optional[str]
    ocrvqa_dir: Optional[str]
    dump_inputs: Optional[str]
    batch_image: int
    reuse_despite_changes: bool
    batch_size: int = 1           # ours: samples per generate call across image counts (1: one at a time)
    configured_max_new_tokens: Optional[int] = None  # --model_configs gen_kwargs (the per-set limits still apply)


def harness_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, allow_abbrev=False, add_help=False,
                                description="MileBench generation with Sequential Prune models")
    g = p.add_argument_group("MileBench (the original generate.py's arguments, - or _ spellings)")
    g.add_argument("--data_dir", "--data-dir", default="data/MileBench", help="MileBench folder")
    g.add_argument("--dataset_name", "--dataset-name", nargs="+", required=True, metavar="DATASET",
                   help="MileBench dataset folder names, ANLS_DocVQA, Rouge_OCR_VQA")
    g.add_argument("--model_name", "--model-name", required=True,
                   help=f"our model name ({', '.join(MODELS)}) or the original's "
                        f"({', '.join(ORIGINAL_MODEL_NAMES)})")
    g.add_argument("--output_dir", "--output-dir", default="outputs",
                   help="results go to <output_dir>/<model name with the pruning tag>/<dataset>/pred.json")
    g.add_argument("--bsz", type=int, default=1, help="accepted (the original's worker answers one sample at a time)")
    g.add_argument("--batch-image", "--batch_image", type=int, default=1,
                   help="the original's batches: consecutive samples of one image count, max(N // images, 1) per "
                        "generate call (its worker answered them one at a time; here they run as one batch, each "
                        "sample pruned by its own schedule); default 1: one sample at a time")
    g.add_argument("--combine_image", "--combine-image", type=int, default=None,
                   help="use <Dataset>_combined_<N>.json and its combined images")
    g.add_argument("--model_configs", "--model-configs", default=None,
                   help="the original's model YAML: model_dir, gen_kwargs.max_new_tokens, max_context_len, "
                        "n_tokens_per_image of --model_name's entry (default: its values for LLaVA-1.5)")
    g.add_argument("--overwrite", action="store_true", help="generate again over an existing pred.json")
    g.add_argument("--adv", action="store_true", help="use <Dataset>-adv.json (the adversarial variant)")
    o = p.add_argument_group("ours")
    o.add_argument("--max-context-len", type=int, default=None, help="prompt budget in tokens (default 4096)")
    o.add_argument("--batch-size", type=int, default=None,
                   help="up to N consecutive samples per generate call, of any image counts (each pruned by its own "
                        "schedule); instead of --batch-image")
    o.add_argument("--n-tokens-per-image", type=int, default=None,
                   help="tokens counted per image by the truncation (default 576, the original's)")
    o.add_argument("--docvqa-ann", default=None, help="ANLS_DocVQA: DocVQA's imdb_val.npy")
    o.add_argument("--docvqa-img-dir", default=None, help="ANLS_DocVQA: the folder of its <image_name>.png pages")
    o.add_argument("--ocrvqa-dir", default=None, help="Rouge_OCR_VQA: the OCR-VQA datasets folder")
    o.add_argument("--dump-inputs", default=None, metavar="FILE",
                   help="write every sample's prompt, token ids (image positions marked) and images as JSON lines "
                        "to FILE, without running the model")
    return p


def _model_config(path: str, name: str) -> dict:
    import yaml

    cfg = yaml.safe_load(Path(path).read_text())
    if not isinstance(cfg, dict) or name not in cfg:
        raise ValueError(f"--model_configs {path} has no entry {name!r}")
    return cfg[name]


def parse(argv: List[str]):
    """(MileBenchArgs, EvalSetting) of a command line; SystemExit(2) with one line on a bad one."""
    setting, rest, ns = parse_flags(argv, prog=PROG)
    p = harness_parser()
    a, unknown = p.parse_known_args(rest)
    if unknown:
        p.error(f"unknown arguments {unknown} (see --help)")
    if ns.register_dataset:
        p.error("--register-dataset is VLMEvalKit's; MileBench reads <data_dir>/<Dataset>/<Dataset>.json")
    name = a.model_name
    if name in REFUSED_MODEL_NAMES:
        p.error(f"--model_name {name}: {REFUSED_MODEL_NAMES[name]}")
    base = ORIGINAL_MODEL_NAMES.get(name, name)
    if base not in MODELS:
        p.error(f"--model_name {name}: not one of ours ({', '.join(MODELS)}) or the original's "
                f"({', '.join(ORIGINAL_MODEL_NAMES)})")
    cfg = {}
    if a.model_configs:
        try:
            cfg = _model_config(a.model_configs, name)
        except (OSError, ValueError) as e:
            p.error(str(e))
        if cfg.get("model_dir") and setting.model_path is None:
            if not Path(cfg["model_dir"]).is_dir():
                p.error(f"--model_configs: model_dir {cfg['model_dir']} is not a folder; give --model-path")
            setting = replace(setting, model_path=cfg["model_dir"])
    # the config's length replaces the default only: the original's per-set limits (DocVQA 100, OCR-VQA 50) still
    # apply, where --max-new-tokens replaces both
    configured = (cfg.get("gen_kwargs") or {}).get("max_new_tokens")
    from SequentialPrune.evaluation.protocols import PIXEL_FAMILIES

    from .models import PAPER_FAMILIES

    if (setting.min_pixels or setting.max_pixels) and MODELS[base].family not in PIXEL_FAMILIES:
        p.error("--min-pixels/--max-pixels apply to Qwen models only")

    if MODELS[base].family not in PAPER_FAMILIES:  # the original ran LLaVA only: the others run their templates
        if setting.protocol not in (None, "hf"):
            p.error(f"--protocol {setting.protocol}: the original's MileBench worker ran LLaVA only; {base} runs its "
                    "hf chat template here (--protocol hf)")
        setting = replace(setting, protocol="hf")
    if a.batch_size is not None and a.batch_image != 1:
        p.error("--batch-size and --batch-image both set how many samples run together: give one of them")
    for flag, v in (("--combine_image", a.combine_image), ("--max-context-len", a.max_context_len),
                    ("--n-tokens-per-image", a.n_tokens_per_image), ("--batch-image", a.batch_image),
                    ("--batch-size", a.batch_size)):
        if v is not None and v < 1:
            p.error(f"{flag} must be >= 1, got {v}")
    args = MileBenchArgs(
        base=base, datasets=list(dict.fromkeys(a.dataset_name)), data_dir=a.data_dir, output_dir=a.output_dir,
        combine_image=a.combine_image, adv=a.adv, overwrite=a.overwrite,
        max_context_len=a.max_context_len or int(cfg.get("max_context_len", 4096)),
        n_tokens_per_image=a.n_tokens_per_image or int(cfg.get("n_tokens_per_image", 576)),
        docvqa_ann=a.docvqa_ann, docvqa_img_dir=a.docvqa_img_dir, ocrvqa_dir=a.ocrvqa_dir,
        dump_inputs=a.dump_inputs, batch_image=a.batch_image, batch_size=a.batch_size or 1,
        reuse_despite_changes=ns.reuse_despite_changes,
        configured_max_new_tokens=int(configured) if configured else None)
    return args, setting


def print_help() -> None:
    harness_parser().print_help()
    print()
    pruning_parser(PROG, "MileBench").print_help()


__all__ = ["EvalSetting", "MileBenchArgs", "parse", "print_help"]
