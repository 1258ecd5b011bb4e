"""MileBench (multi-image, long-context) front end on the evaluation core, with the original research code's two
extra sets (ANLS_DocVQA, Rouge_OCR_VQA), its scoring (``evaluate.py``, ``score.py``) and its timing log.

Modules: ``data`` (the annotation files and the two extra sets), ``prompts`` (the per-sample prompt with left
truncation), ``templates`` (the LLaVA conversation templates), ``inputs`` (token ids and pixels per family),
``models`` (the pruned model classes), ``flags`` (the command line), ``generate`` (the run loop and
``pred.json``), ``dump`` (``--dump-inputs``), ``scoring`` and ``scoring_tables`` (``evaluate.py``/``score.py``).
The commands are in ``eval/MileBench/``.
"""
