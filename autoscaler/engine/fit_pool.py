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

The workers run under SCHED_IDLE, the kernel's lowest CPU priority: they get only the
CPU time no ordinary task of the same group wants, and a daemon thread that wakes (a
GetMetrics call arriving, a collection due) preempts them at once. Under a niceness the
worker's share only shrinks, and a woken thread can still wait out the slice the worker
is running. A fit is background work (the last plan is served meanwhile) and a call is
waited on. SCHED_IDLE starves nothing outside the daemon: in Kubernetes the pod's cgroup
gets its CPU share as before, and the workers use what of it the daemon leaves. Where
the kernel refuses SCHED_IDLE (not Linux, or a seccomp profile) the workers fall back to
the largest niceness, 19. On the shared 2-core development VM the event loop's timer
lateness showed no measurable difference between SCHED_IDLE and nice +10 (docs/grpc.md):
the tail there came from garbage collection and other processes, not the fit worker.
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


FALLBACK_NICENESS = 19
"""The lowest priority a niceness gives, where SCHED_IDLE is refused."""


SINGLE_THREADED_MATH = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def lowest_priority() -> None:
    """Run this process under SCHED_IDLE, or failing that at niceness 19."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError) as error:  # no SCHED_IDLE here, or a sandbox forbids it
        log.warning("fit_worker_not_idle_priority error=%s", error)
        os.nice(FALLBACK_NICENESS - os.nice(0))


def start_worker(parent_pid: int, niceness: int | None) -> None:
    """Worker initializer: die with the owner, and yield the CPU to it (see the module doc)."""
    die_with_parent(parent_pid)
    try:
        if niceness is None:
            lowest_priority()
        else:
            os.nice(niceness)
    except OSError as error:  # a sandbox may forbid it; fits still run
        log.warning("fit_worker_priority_unchanged error=%s", error)


class FitPool(ProcessPoolExecutor):
    """A ProcessPoolExecutor whose workers die with the process and thread that created it,
    and run at the lowest CPU priority (SCHED_IDLE), or with `niceness` added to the owner's
    (the benchmarks compare the two)."""

    def __init__(self, max_workers: int, niceness: int | None = None) -> None:
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
