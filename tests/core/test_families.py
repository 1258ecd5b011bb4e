"""The family axis: every family the library's adapters prune is in every per-family table of the tests and
scripts, or is listed in ABSENT with the reason.

The library's own list is ``SequentialPrune.adapters.families()`` (one adapter per ``model_type``, refused
families left out). Adding a family there without its tiny model, benchmark preset and layout, vision modules,
picture grid, tiny checkpoint and oracle run fails here, naming the table and the family.
"""
from typing import Callable, Dict, Set

import pytest

from SequentialPrune.adapters import ADAPTERS, families

SUPPORTED = tuple(families())


def tiny_models_families() -> Set[str]:
    from tiny_models import FAMILIES
    return set(FAMILIES)


def tiny_models_configs() -> Set[str]:
    """The families whose tiny config the builder makes (and makes of that model_type)."""
    from tiny_models import tiny_config
    built = set()
    for family in SUPPORTED:
        try:
            if tiny_config(family).model_type == family:
                built.add(family)
        except ValueError:  # the builder's answer for a family it does not know
            pass
    return built


def bench_tiny_presets() -> Set[str]:
    from scripts.bench.presets import PRESETS
    return {p.config().model_type for p in PRESETS.values() if p.tier == "tiny"}


def bench_layouts() -> Set[str]:
    from scripts.bench.inputs import LAYOUTS
    return set(LAYOUTS)


def bench_vision_modules() -> Set[str]:
    from scripts.bench.measure import VISION_MODULES
    return set(VISION_MODULES)


def visualize_grids() -> Set[str]:
    from scripts.visualize_pruning import GRIDS
    return set(GRIDS)


def tiny_checkpoint_builders() -> Set[str]:
    from scripts.tiny.families import BY_MODEL_TYPE
    return set(BY_MODEL_TYPE)


def oracle_test_families() -> Set[str]:
    import test_oracles  # tests/core, on the path as every test module's folder is (pytest's rootdir import)
    return set(test_oracles.FAMILIES)


# table -> fn() -> the model types it covers
TABLES: Dict[str, Callable[[], Set[str]]] = {
    "tests/support/tiny_models.py FAMILIES": tiny_models_families,
    "tests/support/tiny_models.py tiny_config (the tiny model's config builder)": tiny_models_configs,
    "scripts/bench/presets.py (a tiny-tier preset)": bench_tiny_presets,
    "scripts/bench/inputs.py LAYOUTS": bench_layouts,
    "scripts/bench/measure.py VISION_MODULES": bench_vision_modules,
    "scripts/visualize_pruning.py GRIDS": visualize_grids,
    "scripts/tiny/families.py BY_MODEL_TYPE (the tiny checkpoint builders)": tiny_checkpoint_builders,
    "tests/core/test_oracles.py FAMILIES (the oracle tests' family list)": oracle_test_families,
}


def evaluation_tables() -> Dict[str, Callable[[], Set[str]]]:
    """The evaluation layer's per-family tables, table name -> fn() -> the model types it covers."""
    def catalog_types():
        from SequentialPrune.evaluation.catalog import FAMILIES
        return {t for types in FAMILIES.values() for t in types}

    def with_a_model():
        from SequentialPrune.evaluation.catalog import FAMILIES, MODELS
        return {t for spec in MODELS.values() for t in FAMILIES[spec.family]}

    def vlmevalkit_classes():
        from SequentialPrune.evaluation.catalog import FAMILIES
        from SequentialPrune.frontends.vlmevalkit.models import CLASSES
        return {t for family in CLASSES for t in FAMILIES[family]}

    def milebench_classes():
        from SequentialPrune.evaluation.catalog import FAMILIES
        from SequentialPrune.frontends.milebench.models import CLASSES
        return {t for family in CLASSES for t in FAMILIES[family]}

    def lmms_eval_models():
        from SequentialPrune.evaluation.catalog import FAMILIES, MODELS
        from SequentialPrune.frontends.lmms_eval.model import BASE_BY_MODEL_TYPE
        # each model type's base model must be of a family that runs that type
        return {t for t, base in BASE_BY_MODEL_TYPE.items() if t in FAMILIES[MODELS[base].family]}

    return {"SequentialPrune/evaluation/catalog.py FAMILIES (the checkpoints the evaluation layer runs)": catalog_types,
            "SequentialPrune/evaluation/catalog.py MODELS (a model name per family)": with_a_model,
            "SequentialPrune/frontends/vlmevalkit/models (a VLMEvalKit model class per family)": vlmevalkit_classes,
            "SequentialPrune/frontends/milebench/models.py CLASSES (a MileBench model class per family)":
                milebench_classes,
            "SequentialPrune/frontends/lmms_eval/model.py BASE_BY_MODEL_TYPE (an lmms-eval model per model type)":
                lmms_eval_models}


TABLES.update(evaluation_tables())

# (table, family) -> why the family is deliberately not in that table
_NO_LLAVA_NEXT = ("the evaluation layer has no LLaVA-NeXT model: neither the paper nor a method's evaluation here "
                  "runs it; the library prunes it (oracle tests)")
ABSENT: Dict[tuple, str] = {
    **{(t, "llava_next"): _NO_LLAVA_NEXT for t in evaluation_tables()},
    ("scripts/bench/presets.py (a tiny-tier preset)", "qwen2_5_vl"):
        "the benchmark builds its inputs and times it as Qwen2-VL (one layout, one vision module name), which "
        "tiny-qwen2-vl runs in CI; its own tiny model is in the oracle tests",
    ("scripts/bench/presets.py (a tiny-tier preset)", "qwen3_vl_moe"):
        "the benchmark builds its inputs and times it as Qwen3-VL (one layout, DeepStack included), which "
        "tiny-qwen3-vl runs in CI; its MoE decoder is in the oracle tests",
    ("scripts/tiny/families.py BY_MODEL_TYPE (the tiny checkpoint builders)", "llava_next"):
        "the tiny checkpoints serve the evaluation layer and the picture tests; the evaluation layer has no "
        "LLaVA-NeXT model, and the picture of its anyres layout is LLaVA-OneVision's (drawn from that checkpoint)",
    ("scripts/tiny/families.py BY_MODEL_TYPE (the tiny checkpoint builders)", "qwen3_vl_moe"):
        "the evaluation layer runs it with the Qwen3-VL model class, whose tiny Qwen3-VL checkpoint covers it; "
        "its MoE decoder is in the oracle tests",
}


def test_the_library_lists_every_family_it_prunes_once():
    assert SUPPORTED and len(set(SUPPORTED)) == len(SUPPORTED)
    pruned = {a.family for a in ADAPTERS.values() if a.refusal is None}
    refused = {a.family for a in ADAPTERS.values() if a.refusal is not None}
    assert set(SUPPORTED) == pruned and not pruned & refused


@pytest.mark.parametrize("table", list(TABLES))
def test_every_supported_family_is_in_the_table(table):
    covered = TABLES[table]()
    missing = [f for f in SUPPORTED if f not in covered and (table, f) not in ABSENT]
    one = len(missing) == 1
    assert not missing, (f"{table} has no entry for the supported famil{'y' if one else 'ies'} {missing}: add "
                         f"{'it' if one else 'them'} there, or list (table, family) in ABSENT in "
                         "tests/core/test_families.py with the reason")


def test_every_absence_is_still_one():
    """An absence that was filled, or names a table or family that is gone, is removed from ABSENT."""
    stale = [(t, f) for t, f in ABSENT if t not in TABLES or f not in SUPPORTED or f in TABLES[t]()]
    assert not stale, f"ABSENT in tests/core/test_families.py lists {stale}, which are no longer absences"
