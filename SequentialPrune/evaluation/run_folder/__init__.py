"""What a run folder holds and guarantees: its identity and setting record, content fingerprints, the lock
that admits one launch at a time, and the per-sample logs."""
