"""`tinyflow.forked.fork_map`: results in order, one torch thread per worker, and the job's signal handlers left
behind (a pool ends its workers with SIGTERM; the job's handler would make each print a traceback)."""

from __future__ import annotations

import os
import signal

import torch

from tinyflow.forked import can_fork, fork_map


def _raise(signum, frame):
    raise RuntimeError("the job's handler")


def test_fork_map_runs_in_order_on_workers_with_default_signals():
    previous = signal.signal(signal.SIGTERM, _raise)  # as tinyflow.app installs for a job
    try:
        parent = os.getpid()
        assert can_fork(2, 4)
        seen = list(
            fork_map(
                lambda i: (
                    i * i,
                    os.getpid() != parent,
                    torch.get_num_threads(),
                    signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
                    signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
                ),
                4,
                2,
            )
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert [s[0] for s in seen] == [0, 1, 4, 9]
    assert all(s[1:] == (True, 1, True, True) for s in seen)
    assert list(fork_map(lambda i: os.getpid(), 3, 1)) == [os.getpid()] * 3  # one worker: here, in turn
