"""The lmms-eval front end: our pruned models as a plugin of an unmodified lmms-eval (PyPI).

``manifest.manifests`` is the ``lmms_eval.models`` entry point (pyproject.toml); lmms-eval then imports
``model`` (the model classes) only when one of our models is asked for. See eval/lmms-eval/README.md.
"""
