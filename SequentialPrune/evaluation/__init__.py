"""The evaluation core: everything an evaluation needs that is not one harness's.

Resolving each model's setting once (``setting``, ``resolve``, ``catalog``,
``protocols``); loading a model with pruning, prefill timing and per-sample
stats (``pruned_model``, ``prefill_timer``, ``sample_stats``, ``rows``); the run
folder (``run_folder``: identity, fingerprints, lock, logs; ``safe_io``); and
the results (``results``). Harness front ends (``SequentialPrune.frontends``)
import it; it imports no harness.
"""
