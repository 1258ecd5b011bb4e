"""The evaluation core: everything an evaluation needs that is not one harness's.

Resolving each model's setting once (``setting``, ``resolve``, ``catalog``,
``protocols``); loading a model with pruning, prefill timing and per-sample
stats (``pruned_model``, ``prefill_timer``, ``sample_stats``, ``rows``); the run
folder (``run_folder``: identity, fingerprints, lock, logs; ``safe_io``); and
the results (``results``). Harness front ends (``SequentialPrune.frontends``)
import it; it imports no harness.

Two conventions are shared rather than per harness, because both harnesses in view use them: a row is a
table row with ``index`` (and ``question``) fields, and a message is a list of ``{"type", "value"}`` items
(VLMEvalKit's form, which the paper's LLaVA inputs are built from). The setting carries the VLMEvalKit front
end's dataset registrations and legacy-flag marker, and its errors name the command-line flags; a second
front end with other flags maps its arguments onto the same fields.
"""
