"""Torchrun workers stop when their launcher dies.

When the torchrun launcher (the elastic agent) is killed outright, nothing
tells its workers: they would run the whole benchmark to completion on their
own. A daemon thread in each worker polls the parent PID; once the worker has
been re-parented, the launcher is gone, and the worker terminates itself.

Why polling and not ``prctl(PR_SET_PDEATHSIG)``: the kernel sends that signal
when the *thread* that forked the worker exits, which need not be the
launcher's death. Why SIGTERM then ``os._exit``: the default SIGTERM action
ends the process even when its main thread is blocked in a collective
(gloo barrier) or a long kernel; ``os._exit`` covers a handler that swallows it.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

POLL_S = 0.5
GRACE_S = 5.0


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "TORCHELASTIC_RESTART_COUNT" in os.environ


def _watch(parent: int) -> None:
    while True:
        time.sleep(POLL_S)
        if os.getppid() != parent:
            print(f"[seqprune] rank {os.environ.get('RANK', '?')}: the torchrun launcher (PID {parent}) is gone; "
                  f"stopping this worker (PID {os.getpid()})", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(GRACE_S)
            os._exit(1)


def start() -> bool:
    """Start the watchdog if this process is a torchrun worker; return whether it runs."""
    if not under_torchrun():
        return False
    threading.Thread(target=_watch, args=(os.getppid(),), name="seqprune-launcher-watchdog", daemon=True).start()
    return True
