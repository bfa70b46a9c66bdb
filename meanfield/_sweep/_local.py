"""A local dask cluster whose workers leave Ctrl-C to this process, also while they start.

A Ctrl-C reaches every process of the terminal's group: each local worker died with a page of tracebacks
(asyncio, nanny, broken pipes) before the sweep's own "interrupted" line.  The workers were therefore started with
SIGINT ignored in this whole process (a disposition that a spawned worker inherits), which also dropped a Ctrl-C
pressed during the seconds the workers take to start: the sweep went on.

Now the cluster is built in a helper thread that *blocks* SIGINT.  A signal mask is per thread: every thread the
helper starts (dask's event loop, the threads that spawn the workers) inherits it, and so does every worker spawned
from them, while this process's main thread keeps its handler and receives the Ctrl-C at once.
"""
from __future__ import annotations

import signal
import threading


def local_cluster(n: int):
    """A ``LocalCluster`` of ``n`` worker processes, one thread each, that do not receive SIGINT.

    Parameters
    ----------
    n : int
        Worker processes.

    Returns
    -------
    distributed.LocalCluster
        Started; the caller closes it.

    Raises
    ------
    KeyboardInterrupt
        A Ctrl-C (or a SIGTERM turned into one by the command line) during the start-up: the cluster is closed
        once its start-up returns, and the interrupt goes on.
    """
    if not hasattr(signal, "pthread_sigmask"):      # pragma: no cover - not POSIX
        return _build(n)
    import multiprocessing.resource_tracker

    # started now, from this thread: started on demand by a worker's start-up, it would unblock SIGINT in the thread
    # that starts it (it masks SIGINT around its own spawn, then unblocks it), and the workers spawned after it
    multiprocessing.resource_tracker.ensure_running()
    box, done = {}, threading.Event()
    threading.Thread(target=_build_blocked, args=(n, box, done), name="meanfield-local-cluster", daemon=True).start()
    try:
        # Event.wait, not Thread.join: a join interrupted by KeyboardInterrupt marks a running thread as finished
        while not done.wait(0.1):
            pass
    except KeyboardInterrupt:
        done.wait()             # closed, not left half-started (a second Ctrl-C leaves it to the process's exit)
        if "cluster" in box:
            box["cluster"].close()
        raise
    if "error" in box:
        raise box["error"]
    return box["cluster"]


def _build_blocked(n: int, box: dict, done: threading.Event) -> None:
    """The helper thread: block SIGINT, build the cluster into ``box`` (or its exception), then set ``done``."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        box["cluster"] = _build(n)
    except BaseException as e:      # noqa: BLE001 - re-raised in the caller's thread
        box["error"] = e
    finally:
        done.set()


def _build(n: int):
    from distributed import LocalCluster

    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40)
