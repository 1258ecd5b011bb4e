"""The tiny-model pipeline: shapes scenes and questions (``scenes``), offline tiny checkpoints of every family
(``checkpoints``, ``families``), the trained shapes LLaVA (``train``), its pruning study (``study``) and the
synthetic VLMEvalKit benchmarks (``lmudata``)."""
