"""The one-command GPU check (``check``, run through ``scripts/gpu_check.sh``) and its full-size masked-reference
oracle (``oracle``)."""
