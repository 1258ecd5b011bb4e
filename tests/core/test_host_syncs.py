"""Pruning adds no host-device synchronisation where a GPU would feel it.

A sync (``.item()``, ``.tolist()``, ``bool(t)``, ``nonzero``, ``torch.tensor(..., device=...)``) makes the CPU
wait for every queued kernel, so it stops running ahead of the GPU; the first GPU check (docs/benchmarks.md, GPU
run 1) found one in every pruning layer and one in every decode step. Counted here on the CPU
(tests/support/host_syncs.py), in SequentialPrune's own code only.
"""
import pytest
import torch

from host_syncs import HostSyncs
from test_oracles import ORACLE_CONFIGS
from tiny_models import build_model, make_inputs

from SequentialPrune import PruneConfig, apply_pruning

# Decoder-side methods ranked by attention: their selection is all on the device (sort, gather, scatter). They
# prune at 1 (fastv), 7 (sequential), 3 (pdrop, custom) layers here, so equal counts mean none per layer.
ON_DEVICE = ("fastv", "sequential", "pdrop", "custom")


def _prefill_and_step(model, inputs):
    """(syncs of a one-token generate: its prefill alone; those four more generated tokens add to it)."""
    counts = []
    with torch.no_grad():
        for new in (1, 5):
            with HostSyncs() as run:
                model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False)
            counts.append(run)
    decode = HostSyncs()
    decode.seen = (counts[1].seen - counts[0].seen) + (counts[0].seen - counts[1].seen)  # both ways: any change
    return counts[0], decode


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_decode_steps_and_attention_ranked_pruning_layers_make_no_host_sync(family):
    model, inputs = build_model(family), make_inputs(family)
    prompt_checks = None
    for method, cfg in ORACLE_CONFIGS.items():
        if method == "visionzip" and family != "llava":
            continue  # the same capture path as fastervlm's on Qwen; its tower mapping is tested elsewhere
        with apply_pruning(model, cfg):
            prefill, decode = _prefill_and_step(model, inputs)
        assert decode.total == 0, f"{method} on {family}: a decode step syncs at {dict(decode.seen)}"
        if method in ON_DEVICE:
            # the prompt's checks (image-token counts, padding side) sync once per prefill, before any layer runs;
            # nothing more, whether the plan prunes at one layer or at seven. (Scorers of the vision tower read
            # on the host once per prompt, between the tower and the decoder, where little is queued.)
            sites = set(prefill.seen.items())
            assert all(s.startswith("engine.py:") for (_, s), _ in sites), f"{method}: {dict(prefill.seen)}"
            prompt_checks = prompt_checks or sites
            assert sites == prompt_checks, f"{method} on {family}: {dict(prefill.seen)} vs {dict(prompt_checks)}"
    assert prompt_checks is not None and 0 < sum(n for _, n in prompt_checks) <= 4


def test_the_counter_sees_a_sync_in_a_scorer():
    """The counter is not blind: a pruning layer that reads a score on the host is counted at that layer."""
    model, inputs = build_model("llava"), make_inputs("llava")
    with apply_pruning(model, PruneConfig("random", 0.75, 2, seed=1)) as pruner:  # a CPU generator per row
        prefill, _ = _prefill_and_step(model, inputs)
    layers = len(pruner.config.plan(pruner.stats.n_image_tokens))
    scorer_sites = {k: n for k, n in prefill.seen.items() if k[1].startswith("scorers/random.py")}
    assert layers > 1 and scorer_sites and all(n == layers for n in scorer_sites.values())
