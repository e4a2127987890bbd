"""Runs as tasks on Dask distributed: a local cluster of processes, or a cluster given by address.

Here live :func:`connect` (start a ``LocalCluster`` of ``jobs`` worker processes, or connect to the
scheduler at an address, failing in a few seconds with :class:`SchedulerUnreachable`), the
:class:`Session` that submits :class:`~landscape.reports.worker.RunTask` s and hands back their
:class:`~landscape.reports.worker.RunOutcome` s as they finish, and :func:`run_on_worker` (what a
worker executes). Each run is one task: a worker executes it in its own temporary folder and
returns its files, so no filesystem is shared. A run whose ``device`` is ``cuda`` (or ``auto``
when a worker advertises GPUs) asks for the worker resource ``GPU=1``. A run whose worker dies is
retried once on another worker, then fails naming the cause; Ctrl-C sets a Dask ``Event`` that
the running tasks poll, so their notebooks stop and their partial files still come back. Writing
the files, the index and the lock are :mod:`landscape.reports.runner`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from typing import Any

import dask
from distributed import Client, Event, KilledWorker, LocalCluster, WorkerPlugin, as_completed

from landscape.reports.execute import describe_error
from landscape.reports.worker import RunOutcome, RunTask, execute_task

__all__ = [
    "GPU_RESOURCE",
    "SchedulerUnreachable",
    "Session",
    "connect",
    "run_on_worker",
]

#: The worker resource a run on CUDA asks for (start GPU workers with ``--resources GPU=1``).
GPU_RESOURCE = "GPU"

#: Dask settings of the local cluster: a task whose worker dies is retried once, and the worker
#: processes keep the caller's thread settings (Dask's nanny would set OMP_NUM_THREADS=1 etc.).
_LOCAL_CONFIG = {
    "distributed.scheduler.allowed-failures": 1,
    "distributed.nanny.pre-spawn-environ": {
        "MALLOC_TRIM_THRESHOLD_": 65536,
        "OMP_NUM_THREADS": None,
        "MKL_NUM_THREADS": None,
        "OPENBLAS_NUM_THREADS": None,
    },
}


class SchedulerUnreachable(ConnectionError):
    """No Dask scheduler answered at the address given (``landscape run --scheduler``)."""


class Session:
    """The runs of one ``landscape run`` on a Dask cluster.

    Attributes:
        client: the Dask client.
        local: whether the cluster is the local one :func:`connect` started.
        description: the cluster in a few words ("local Dask cluster of 2 processes", ...).
    """

    def __init__(self, client: Client, local: bool, description: str) -> None:
        self.client = client
        self.local = local
        self.description = description
        self.stop_event = f"landscape-stop-{uuid.uuid4().hex}"
        self.pending: dict[Any, RunTask] = {}
        workers = client.scheduler_info()["workers"].values()
        self.gpu_workers = sum(bool(w.get("resources", {}).get(GPU_RESOURCE)) for w in workers)

    def resources(self, task: RunTask) -> dict[str, float] | None:
        """The worker resources a run asks for: ``GPU=1`` for ``cuda`` (or ``auto`` with GPUs).

        On the local cluster none (its processes share this machine's GPUs).
        """
        device = str(task.run.parameters.get("device", "")).lower()
        if self.local or not (device.startswith("cuda") or device == "auto" and self.gpu_workers):
            return None
        return {GPU_RESOURCE: 1}

    def submit(self, task: RunTask) -> None:
        """Submit a run (retried once on another worker if its worker dies)."""
        future = self.client.submit(
            run_on_worker,
            task,
            self.stop_event,
            key=f"landscape-{task.run.name}-{uuid.uuid4().hex[:8]}",
            pure=False,
            retries=1,
            resources=self.resources(task),
        )
        self.pending[future] = task

    def outcomes(self) -> Iterator[RunOutcome]:
        """The submitted runs' outcomes as they finish (a lost or failed task: a failed outcome)."""
        for future in as_completed(list(self.pending), loop=self.client.loop):
            task = self.pending.pop(future)
            yield _outcome(future, task)

    def stop(self, timeout: float) -> list[RunOutcome]:
        """Stop every run (Ctrl-C): set the stop event, collect what comes back within ``timeout``.

        Running notebooks stop and return their partial files ("interrupted"); runs not started
        return at once without executing (status None). Tasks still out after ``timeout`` seconds
        are cancelled and count as not started.
        """
        with contextlib.suppress(Exception):  # a scheduler gone: nothing runs there any more
            Event(self.stop_event, client=self.client).set()
        deadline = time.monotonic() + timeout
        while any(f.status == "pending" for f in self.pending) and time.monotonic() < deadline:
            time.sleep(0.1)
        outcomes = []
        for future, task in list(self.pending.items()):
            if future.status == "pending":
                outcomes.append(RunOutcome(task.run.name, None))
            else:
                outcomes.append(_outcome(future, task))
        with contextlib.suppress(Exception):
            self.client.cancel(list(self.pending), force=True)
        self.pending.clear()
        return outcomes


def _outcome(future: Any, task: RunTask) -> RunOutcome:
    """A finished future's outcome; a task that raised or was lost becomes a failed outcome."""
    try:
        return future.result()
    except KilledWorker as exc:
        error = (
            f"the worker executing the run died ({exc.allowed_failures + 1} times, the retry "
            f"included; last {exc.last_worker.address}): out of memory, killed, or its machine "
            "went away"
        )
    except CancelledError:
        error = "the run's task was cancelled by the Dask scheduler (was it restarted?)"
    except Exception as exc:  # the task itself raised: a worker lacking landscape, ...
        first = describe_error(exc).splitlines()[0]
        error = f"the worker could not execute the run ({first}); is its environment the client's?"
    return RunOutcome(task.run.name, "failed", error)


@contextlib.contextmanager
def connect(
    scheduler: str | None = None,
    jobs: int = 1,
    *,
    timeout: float = 5.0,
    say: Callable[[str], Any] = print,
) -> Iterator[Session]:
    """A :class:`Session` on the Dask scheduler at ``scheduler``, or on a local cluster.

    Args:
        scheduler: the scheduler's address (``tcp://host:8786``); None starts a ``LocalCluster``
            of ``jobs`` worker processes (one thread each, no dashboard, quiet logs), closed on exit.
        jobs: the local cluster's worker processes.
        timeout: seconds to wait for the scheduler to answer.
        say: where the line describing the cluster goes.

    Raises:
        SchedulerUnreachable: naming the address, when no scheduler answers within ``timeout``.
    """
    if scheduler is None:
        started = time.perf_counter()
        with dask.config.set(_LOCAL_CONFIG):
            cluster = LocalCluster(
                n_workers=jobs,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",  # no fixed port (8787 may be taken)
                memory_limit=0,  # the notebooks run in child processes; Dask cannot see them
                silence_logs=logging.CRITICAL,
            )
        try:
            client = Client(cluster, set_as_default=False)
            client.register_plugin(_IgnoreCtrlC(), name=_IgnoreCtrlC.name)
            took = time.perf_counter() - started
            session = Session(client, True, f"local Dask cluster of {jobs} process(es)")
            say(f"Started a {session.description} in {took:.1f} s")
            try:
                yield session
            finally:
                client.close()
        finally:
            with _quiet():
                cluster.close()
        return
    try:
        _knock(scheduler, timeout)
        with _quiet():
            client = Client(scheduler, timeout=timeout, set_as_default=False)
    except Exception as exc:  # refused, timed out, a bad address, not Dask
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SchedulerUnreachable(
            f"no Dask scheduler answers at {scheduler} ({reason}); start one there with "
            "`dask scheduler`, or check the address (tcp://host:8786)."
        ) from None
    try:
        workers = len(client.scheduler_info()["workers"])
        session = Session(client, False, f"Dask cluster at {scheduler}")
        gpus = f", {session.gpu_workers} with {GPU_RESOURCE}" if session.gpu_workers else ""
        say(f"Connected to the {session.description} ({workers} worker(s) now{gpus})")
        yield session
    finally:
        client.close()


def _knock(address: str, timeout: float) -> None:
    """Raise at once when nothing listens at ``address``, or something that is not Dask does.

    Dask itself retries a refused connection until its timeout (a plain socket says "connection
    refused" in milliseconds), and a client half-built against a stranger hangs at exit; here a
    bare connection, then Dask's handshake, are tried first.
    """
    from distributed.comm import connect as dask_connect
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme == "tcp":
        host, port = parse_host_port(location)
        socket.create_connection((host, port), timeout=timeout).close()

    async def handshake() -> None:
        comm = await dask_connect(address, timeout=timeout)
        await comm.close()

    try:
        asyncio.run(asyncio.wait_for(handshake(), timeout))
    except (OSError, TimeoutError, asyncio.TimeoutError):
        raise
    except Exception as exc:
        raise OSError(f"something answers there, but not a Dask scheduler ({exc})") from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Dask's loggers in this process (connection retries, a closing cluster's noise)."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_on_worker(task: RunTask, stop_event: str) -> RunOutcome:
    """What a Dask worker executes for a run: :func:`~landscape.reports.worker.execute_task`.

    The temporary folder goes in the worker's own directory (which Dask tidies after a worker that
    died); the notebook stops when the client sets the Dask event ``stop_event``.
    """
    from distributed import get_worker

    return execute_task(task, _EventFlag(stop_event), workdir=get_worker().local_directory)


class _EventFlag:
    """A Dask ``Event`` read as a stop flag, asking the scheduler at most every ``every`` seconds."""

    def __init__(self, name: str, every: float = 1.0) -> None:
        self.name = name
        self.every = every
        self._event: Event | None = None
        self._set = False
        self._next = 0.0

    def is_set(self) -> bool:
        if not self._set and time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every
            with contextlib.suppress(Exception):  # a scheduler gone: the worker goes too
                self._event = self._event or Event(self.name)
                self._set = bool(self._event.is_set())
        return self._set


class _IgnoreCtrlC(WorkerPlugin):
    """Local worker processes ignore Ctrl-C (SIGINT): the client stops their runs itself.

    A Ctrl-C at the terminal reaches every process of the foreground group; a worker killed by it
    would lose the partial notebook that an interrupted run keeps.
    """

    name = "landscape-ignore-ctrl-c"
    idempotent = True

    def setup(self, worker: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
