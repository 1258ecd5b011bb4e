"""Harness front ends over the evaluation core: each keeps only what is its harness's (registering our
model classes, hooks into its run loop, its flags). Importing this package imports no harness."""
