"""The VLMEvalKit front end (the ``ms-vlmeval`` pip package): our model classes registered into its
``supported_VLM`` on its own prompt classes, hooks into its run loop, our flags and the original code's
aliases. ``eval/VLMEvalKit/run.py`` runs :func:`SequentialPrune.frontends.vlmevalkit.cli.main`.

Modules: ``cli`` (the phases and exit codes), ``flags``, ``launch`` (resolving, registering and locking each
model before VLMEvalKit's loop), ``datasets`` ($LMUData), ``models/``, ``hooks``, ``run_files``
(VLMEvalKit's files in a run folder), ``results``, ``image_cache``, ``dist_fallback``, ``launcher_watchdog``.
"""
