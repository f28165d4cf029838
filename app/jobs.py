"""The dashboard's heavy work in worker processes: one job queue per server, bounded by the cores.

Why processes: torch keeps its forward-mode AD state (``dual_level``) per process, not per thread,
and the maps, mean forces and the sampler's dA/dQ all use forward mode; two sessions training (or a
training next to a simulation) in threads of one server break each other ("Trying to create a dual
Tensor for forward AD but no level exists").  A process per job also lets the server use every core,
and a job that ends returns all its memory.

:class:`JobQueue` runs at most ``workers`` jobs at once (default: the number of cores, or
``$LATENTLAB_WORKERS``); the others wait in a queue that tells each job its place.  Every job gets a
fresh process (``forkserver``: forked from a server that has imported torch and latentlab once, so a
job starts in milliseconds; ``spawn`` where forkserver does not exist), which

* streams events back (``ctx.emit(kind, data)`` in the worker -> ``on_event(job, kind, data)`` here,
  called on the queue's thread),
* ends with a result (``on_done(job)``; ``job.state`` is ``finished``, ``stopped``, ``failed`` or
  ``cancelled``),
* stops when asked: :meth:`Job.stop` sets an event the worker polls every batch or record (well
  within a second); a worker that has not ended ``stop_grace`` seconds later is terminated.

Preemptible jobs (simulations, which run until paused) give their worker to a waiting job after
``time_slice`` seconds: they are stopped with ``job.preempted = True`` and their owner re-submits
them (the simulation resumes where it stopped), so twenty sessions share two cores in turn instead
of the first two holding them.

Nothing here imports torch; :mod:`latentlab_app.worker` is what runs in the worker processes.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import threading
import time
from multiprocessing.connection import wait as wait_connections

log = logging.getLogger("latentlab.app.jobs")

#: Job states.
QUEUED, RUNNING, FINISHED = "queued", "running", "finished"
STOPPED, FAILED, CANCELLED = "stopped", "failed", "cancelled"
ENDED = (FINISHED, STOPPED, FAILED, CANCELLED)

_ids = itertools.count(1)


def default_workers() -> int:
    """Jobs run at once: ``$LATENTLAB_WORKERS`` or the number of cores."""
    value = os.environ.get("LATENTLAB_WORKERS")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            log.warning("LATENTLAB_WORKERS=%r is not a number; using the number of cores", value)
    return max(1, os.cpu_count() or 1)


def default_start_method() -> str:
    """``$LATENTLAB_START_METHOD``, else ``forkserver`` where it exists (Linux, macOS), else ``spawn``."""
    method = os.environ.get("LATENTLAB_START_METHOD")
    if method:
        return method
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


class Job:
    """One unit of heavy work (see the module docstring); made by :meth:`JobQueue.submit`."""

    def __init__(self, queue: "JobQueue", kind: str, payload, owner, on_event, on_done, priority: int,
                 preemptible: bool):
        self.id = next(_ids)
        self.queue, self.kind, self.payload, self.owner = queue, kind, payload, owner
        self.on_event, self.on_done = on_event, on_done
        self.priority, self.preemptible = int(priority), bool(preemptible)
        self.state = QUEUED
        self.result = None
        self.error = ""
        self.traceback = ""
        self.preempted = False
        self.submitted = time.monotonic()
        self.started: float | None = None
        self.ended: float | None = None
        self.stop_requested: float | None = None
        self.pid: int | None = None  # of its worker process, once running
        self.grace: float | None = None  # seconds from a stop request to termination (None: the queue's)
        self._done = threading.Event()

    def __repr__(self) -> str:
        return f"Job({self.id}, {self.kind}, {self.state}, owner={self.owner!r})"

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.state in (QUEUED, RUNNING)

    def position(self) -> int:
        """Place in the queue (1 = next to start), 0 when not waiting."""
        return self.queue.position(self)

    def stop(self, grace: float | None = None) -> None:
        """Cancel a queued job now; ask a running one to stop (terminated after ``grace`` s, default the queue's)."""
        self.queue.stop(self, grace)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended (True) or ``timeout`` seconds passed (False)."""
        return self._done.wait(timeout)

    def seconds(self) -> float:
        """Seconds it has run (or ran)."""
        if self.started is None:
            return 0.0
        return (self.ended or time.monotonic()) - self.started


class _Worker:
    """A worker process with its pipe and stop event, running one job."""

    def __init__(self, ctx, job: Job):
        from latentlab_app.worker import child_main

        self.conn, child = ctx.Pipe()
        self.stop_event = ctx.Event()
        self.process = ctx.Process(target=child_main, args=(child, self.stop_event), daemon=True,
                                   name=f"latentlab-job-{job.id}-{job.kind}")
        self.job = job
        self.process.start()
        child.close()
        self.dead_since: float | None = None
        # Large payloads (a model, a simulation to resume) are sent from a thread: the pipe blocks
        # until the child reads, and the queue's thread must keep serving the other jobs meanwhile.
        threading.Thread(target=self._send, args=((job.kind, job.payload),), daemon=True,
                         name=f"latentlab-send-{job.id}").start()

    def _send(self, message) -> None:
        try:
            self.conn.send(message)
        except (OSError, ValueError, EOFError):  # the worker is gone; the queue reports it
            pass


class JobQueue:
    """Run jobs in worker processes, at most ``workers`` at once (see the module docstring).

    Parameters
    ----------
    workers : int, optional
        Jobs run at once (default :func:`default_workers`).
    stop_grace : float, s
        A worker asked to stop is terminated if it has not ended this long after.
    time_slice : float, s
        A preemptible job that has run this long gives its worker to a waiting job (default
        ``$LATENTLAB_TIME_SLICE`` or 60).
    start_method : str, optional
        multiprocessing start method (default :func:`default_start_method`).
    """

    def __init__(self, workers: int | None = None, *, stop_grace: float = 3.0, time_slice: float | None = None,
                 start_method: str | None = None):
        self.workers = int(workers) if workers else default_workers()
        if time_slice is None:
            time_slice = float(os.environ.get("LATENTLAB_TIME_SLICE") or 60.0)
        self.stop_grace, self.time_slice = float(stop_grace), float(time_slice)
        self.start_method = start_method or default_start_method()
        self._ctx = mp.get_context(self.start_method)
        if self.start_method == "forkserver":
            # The fork server imports torch and the library once; each job is a fork of it.
            self._ctx.set_forkserver_preload(["latentlab_app.worker"])
        self._lock = threading.RLock()
        self._queued: list[Job] = []
        self._running: dict[Job, _Worker] = {}
        self._exiting: list[tuple[float, object]] = []  # (when asked, process) of workers on their way out
        self._wake_recv, self._wake_send = self._ctx.Pipe(duplex=False)
        self._closed = False
        self.finished_jobs = 0
        self._thread = threading.Thread(target=self._pump, daemon=True, name="latentlab-jobs")
        self._thread.start()

    # ------------------------------------------------------------------ public
    def submit(self, kind: str, payload, *, owner=None, on_event=None, on_done=None, priority: int = 1,
               preemptible: bool = False) -> Job:
        """Queue a job; it starts as soon as a worker is free (lower ``priority`` first, then in order)."""
        if self._closed:
            raise RuntimeError("the job queue is shut down")
        job = Job(self, kind, payload, owner, on_event, on_done, priority, preemptible)
        with self._lock:
            self._queued.append(job)
            self._queued.sort(key=lambda j: (j.priority, j.submitted, j.id))
        self._wake()
        return job

    def position(self, job: Job) -> int:
        with self._lock:
            try:
                return self._queued.index(job) + 1
            except ValueError:
                return 0

    def stop(self, job: Job, grace: float | None = None) -> None:
        with self._lock:
            if job in self._queued:
                self._queued.remove(job)
                self._finish(job, CANCELLED)
                return
            worker = self._running.get(job)
            if worker is None:
                return
            if grace is not None:
                job.grace = min(grace, job.grace if job.grace is not None else grace)
            if job.stop_requested is not None:
                return
            job.stop_requested = time.monotonic()
            worker.stop_event.set()
        self._wake()

    def cancel_owner(self, owner, grace: float = 1.0) -> list[Job]:
        """Stop every job of ``owner`` (a closed session), terminating workers after ``grace`` s; returns them."""
        with self._lock:
            jobs = [j for j in self._queued if j.owner == owner] + [j for j in self._running if j.owner == owner]
        for job in jobs:
            self.stop(job, grace)
        return jobs

    def jobs(self, owner=None) -> list[Job]:
        """Queued and running jobs (of ``owner``)."""
        with self._lock:
            jobs = list(self._running) + list(self._queued)
        return [j for j in jobs if owner is None or j.owner == owner]

    def status(self) -> dict:
        with self._lock:
            return {"workers": self.workers, "running": len(self._running), "queued": len(self._queued),
                    "finished": self.finished_jobs, "start_method": self.start_method,
                    "processes": [w.process.pid for w in self._running.values()]}

    def warm_up(self) -> None:
        """Start the fork server now (it imports torch once), so that the first job starts at once."""
        if self.start_method == "forkserver":
            from multiprocessing import forkserver

            forkserver.ensure_running()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every job and the queue's thread; terminate workers that do not end in ``timeout`` s."""
        with self._lock:
            jobs = list(self._queued) + list(self._running)
        for job in jobs:
            self.stop(job)
        deadline = time.monotonic() + timeout
        for job in jobs:
            job.wait(max(0.0, deadline - time.monotonic()))
        self._closed = True
        self._wake()
        self._thread.join(2.0)

    # ------------------------------------------------------------------ the queue's thread
    def _wake(self) -> None:
        try:
            self._wake_send.send_bytes(b"x")
        except (OSError, ValueError):
            pass

    def _pump(self) -> None:
        while not self._closed:
            try:
                self._start_queued()
                with self._lock:
                    workers = list(self._running.values())
                ready = wait_connections([w.conn for w in workers] + [self._wake_recv], timeout=0.1)
                if self._wake_recv in ready:
                    while self._wake_recv.poll():
                        self._wake_recv.recv_bytes()
                for w in workers:
                    if w.conn in ready:
                        self._receive(w)
                self._enforce_stops()
                self._reap()
            except Exception:  # the queue's thread must survive anything one job does
                log.exception("job queue")
                time.sleep(0.1)

    def _start_queued(self) -> None:
        with self._lock:
            while self._queued and len(self._running) < self.workers:
                job = self._queued.pop(0)
                try:
                    worker = _Worker(self._ctx, job)
                except Exception as err:  # cannot start a process (out of memory, too many processes)
                    job.error = f"cannot start a worker process: {err}"
                    self._finish(job, FAILED)
                    continue
                job.state, job.started, job.pid = RUNNING, time.monotonic(), worker.process.pid
                self._running[job] = worker
            if self._queued and len(self._running) >= self.workers:
                self._preempt()

    def _preempt(self) -> None:
        """Stop the longest-running preemptible job past its time slice (one at a time)."""
        now = time.monotonic()
        if any(j.preempted and j.state == RUNNING for j in self._running):
            return
        waiting = [j for j in self._running if j.preemptible and j.stop_requested is None
                   and now - j.started >= self.time_slice]
        if waiting:
            job = max(waiting, key=lambda j: now - j.started)
            job.preempted = True
            job.stop_requested = now
            self._running[job].stop_event.set()

    def _receive(self, worker: _Worker) -> None:
        job = worker.job
        while True:
            try:
                if not worker.conn.poll():
                    return
                message = worker.conn.recv()
            except (EOFError, OSError):
                worker.dead_since = worker.dead_since or time.monotonic()
                return
            except Exception as err:  # a message that cannot be unpickled
                message = ("error", f"the worker sent an unreadable message ({type(err).__name__}: {err})", "")
            tag = message[0]
            if tag == "event":
                self._call(job.on_event, job, message[1], message[2])
            elif tag == "done":
                job.result = message[1]
                self._end(job, STOPPED if job.stop_requested is not None else FINISHED)
                return
            elif tag == "error":
                job.error, job.traceback = message[1], message[2]
                self._end(job, FAILED)
                return

    def _end(self, job: Job, state: str) -> None:
        with self._lock:
            worker = self._running.pop(job, None)
        if worker is not None:
            self._exiting.append((time.monotonic(), worker.process))
            worker.conn.close()
        self._finish(job, state)

    def _finish(self, job: Job, state: str) -> None:
        job.state, job.ended = state, time.monotonic()
        self.finished_jobs += 1
        self._call(job.on_done, job)
        job._done.set()
        self._wake()

    def _call(self, function, *args) -> None:
        if function is None:
            return
        try:
            function(*args)
        except Exception:
            log.exception("callback of %r", args[0])

    def _enforce_stops(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [(j, w) for j, w in self._running.items() if j.stop_requested is not None
                    and now - j.stop_requested > (self.stop_grace if j.grace is None else j.grace)]
        for job, worker in late:
            worker.process.terminate()
            self._end(job, STOPPED)
        still = []
        for asked, process in self._exiting:
            if not process.is_alive():
                process.join(0)
                continue
            if now - asked > 2.0:  # a finished job whose process lingers
                process.kill()
            if now - asked < 10.0:
                still.append((asked, process))
        self._exiting = still

    def _reap(self) -> None:
        with self._lock:
            dead = [(j, w) for j, w in self._running.items() if not w.process.is_alive()]
        for job, worker in dead:
            self._receive(worker)  # what it sent before it ended
            if job.state != RUNNING:
                continue
            if job.stop_requested is not None:
                self._end(job, STOPPED)
            else:
                job.error = (f"the worker process ended unexpectedly (exit code {worker.process.exitcode}); "
                             "the server may be out of memory")
                self._end(job, FAILED)


_default: JobQueue | None = None
_default_lock = threading.Lock()


def default_queue() -> JobQueue:
    """The server's one queue (created on first use; ``$LATENTLAB_WORKERS`` sets its size)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = JobQueue()
        return _default
