"""The process pool that runs model fits, tied to the life of the process that owns it.

A SIGKILLed daemon runs no shutdown, so its pool must not depend on one: a worker
waiting for work holds the write end of its own call queue and never sees EOF, and a
forkserver stays up for as long as any of its children holds its "alive" pipe. Unless
the daemon is PID 1 of its container (whose death takes the whole PID namespace with
it), that left the forkserver, the workers and the resource tracker running.

So every worker asks the kernel to SIGKILL it when its parent dies
(`prctl(PR_SET_PDEATHSIG)`). The workers are started with `spawn`, each a direct
child of the owner, so that parent is the owner itself (under `forkserver` it would
be the forkserver, which the workers keep alive). `spawn` is fork+exec, as safe as
`forkserver` in a process that holds gRPC threads. The multiprocessing resource
tracker needs no signal: it exits by itself, unlinking any semaphores left behind,
once every process holding its pipe (the owner and the workers) is gone.

PR_SET_PDEATHSIG fires when the *thread* that started the worker ends, not the
process. ProcessPoolExecutor starts workers on demand in `submit`, so the pool only
accepts work from the thread that created it (the daemon's event-loop thread, which
lives as long as the pool); a worker started by a short-lived thread would be killed
with that thread and break the pool.

Linux only: elsewhere there is no prctl and the workers run without that guard.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import ParamSpec, TypeVar

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def set_parent_death_signal(signum: int) -> bool:
    """Have the kernel send `signum` to this process when its parent thread ends.

    Returns False where the platform has no such request; raises OSError when the
    kernel refuses it.
    """
    if not sys.platform.startswith("linux"):
        return False  # prctl is Linux-only
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False  # a libc without prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    if prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    return True


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: be SIGKILLed with the owner, whose pid is `parent_pid`."""
    try:
        guarded = set_parent_death_signal(signal.SIGKILL)
    except OSError as error:
        # Fits still work; only the cleanup after a crash is lost, so keep running.
        log.warning("fit_worker_unguarded error=%s", error)
        return
    # The owner may have died before the request took effect: the worker has then been
    # re-parented already and no signal will come.
    if guarded and os.getppid() != parent_pid:
        os._exit(1)


FIT_NICENESS = 10
"""Fits are background work: with the workers this much nicer, the daemon's own process
(GetMetrics answers, collection) wins the CPU whenever both want it."""


SINGLE_THREADED_MATH = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def start_worker(parent_pid: int, niceness: int) -> None:
    """Worker initializer: die with the owner, and yield the CPU to it."""
    die_with_parent(parent_pid)
    try:
        os.nice(niceness)
    except OSError as error:  # a sandbox may forbid it; fits still run
        log.warning("fit_worker_priority_unchanged error=%s", error)


class FitPool(ProcessPoolExecutor):
    """A ProcessPoolExecutor whose workers die with the process and thread that created it,
    and run at a lower CPU priority than it."""

    def __init__(self, max_workers: int, niceness: int = FIT_NICENESS) -> None:
        # One math thread per worker (spawned workers inherit this environment): a worker's
        # BLAS/OpenMP pool would otherwise take every core from the daemon it serves.
        for variable in SINGLE_THREADED_MATH:
            os.environ.setdefault(variable, "1")
        self._owner_thread = threading.get_ident()
        super().__init__(
            max_workers=max_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=start_worker,
            initargs=(os.getpid(), niceness),
        )

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Queue `fn(*args, **kwargs)`; only from the thread that created the pool (see the module doc)."""
        if threading.get_ident() != self._owner_thread:
            raise RuntimeError("FitPool.submit: called from a thread other than the one that created the pool")
        return super().submit(fn, *args, **kwargs)
