"""What the state classes share: readable error messages, devices, file places, jobs in worker processes."""

from __future__ import annotations

import os
import threading

import param


def message(err: BaseException) -> str:
    """One readable line (or a short paragraph) for an exception shown in the page."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0] if len(text) > 400 else text


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def device_choices() -> list[str]:
    return ["cpu", "cuda"] if cuda_available() else ["cpu"]


def models_directory() -> str:
    """Where model files are saved by default: ``$LATENTLAB_MODELS`` or ``~/latentlab-models``."""
    return os.environ.get("LATENTLAB_MODELS") or os.path.join(os.path.expanduser("~"), "latentlab-models")


class JobState(param.Parameterized):
    """Base of the states whose work runs as a job of the session's :class:`latentlab_app.jobs.JobQueue`.

    ``self.job`` is the current job (or None); :meth:`waiting_text` says where it waits in the queue.
    Callbacks of a job run on the queue's thread: they only update parameters and never wait.
    """

    error = param.String(default="")
    status = param.String(default="")
    version = param.Integer(default=0, doc="bumped on every change the views draw")

    def __init__(self, session, **params):
        super().__init__(**params)
        self.session = session
        self.job = None
        self._lock = threading.RLock()
        self.param.watch(lambda *events: self.bump(), ["error", "status"])  # a new message is redrawn too

    @property
    def queue(self):
        return self.session.queue

    def submit(self, kind: str, payload, **kwargs):
        """Queue a job of this session; its events go to ``on_event(job, kind, data)``, its end to ``on_done(job)``."""
        self.job = self.queue.submit(kind, payload, owner=self.session.id, **kwargs)
        return self.job

    def save_file(self, write, kind: str, path: str | None = None, overwrite: bool = False, **checks) -> bool:
        """Write this state's result with ``write(target)`` to ``path`` (default: the session's ``self.path``,
        whose folder is made on first use): an existing file is refused unless ``overwrite``; an error is a
        message (``error``), never an exception.  ``checks`` go to :func:`latentlab.io.output_path`."""
        from latentlab.io import output_path

        try:
            if path is None or os.path.dirname(os.path.abspath(path)) == os.path.abspath(models_directory()):
                os.makedirs(os.path.dirname(os.path.abspath(path or self.path)), exist_ok=True)
            target = output_path(path or self.path, kind, overwrite=overwrite, argument=f"{kind} file", **checks)
            write(target)
        except Exception as err:
            self.error = f"cannot save the {kind}: {message(err)}"
            return False
        self.param.update(status=f"saved to {target}", error="", path=target)
        return True

    def stop(self) -> None:
        """Ask the current job to stop (it ends at its next safe point; what it finished is kept)."""
        if self.job is not None and self.job.active:
            self.job.stop()

    def on_trainer_event(self, job, kind, event: dict) -> None:
        """``on_event`` of a job that sends trainer-style events (dicts with an ``"event"``): a ``"message"``
        becomes the status, the others go to :meth:`trainer_event` and the views are redrawn; events of an
        older job (one that was replaced meanwhile), and dicts without an ``"event"``, are ignored."""
        if job is not self.job:
            return
        what = event.get("event")
        if what == "message":
            self.status = str(event["message"])
        elif what is not None:
            self.trainer_event(what, event)
            self.bump()

    def trainer_event(self, what: str, event: dict) -> None:
        """One trainer-style event ``what`` of the current job (see :meth:`on_trainer_event`); none by default."""

    def finish(self, job, what: str, handle, flag: str = "running", failed_status: str = "failed",
               stopped: str | None = None) -> None:
        """The end of ``job`` (an ``on_done`` callback), ignored unless it is the current job.

        A result goes to ``handle(result)``; a job that ended without one says so in ``status`` (``stopped``, by
        default "stopped" or "cancelled before it started"); a failed job, or a damaged result that ``handle``
        cannot read, becomes the message "WHAT failed: ..." with ``status`` ``failed_status``, never a dead
        session.  In every case the parameter ``flag`` (queued or running) is cleared and the views redrawn.
        """
        if job is not self.job:  # detached: its data set, map or model was replaced meanwhile
            return
        try:
            if job.state == "failed":
                self.param.update(error=f"{what} failed: {job.error}", status=failed_status)
            elif job.result is None:  # cancelled while queued, or terminated
                self.status = stopped or ("stopped" if job.state != "cancelled" else "cancelled before it started")
            else:
                handle(job.result)
        except Exception as err:  # a damaged result is a message, never a dead session
            self.param.update(error=f"{what} failed: {message(err)}", status=failed_status)
        finally:
            setattr(self, flag, False)
            self.bump()

    def cannot_start(self, missing: str | None = None) -> bool:
        """True when this job runs already, or (with the error set) when ``missing`` names an input it lacks."""
        if self.running:
            return True
        if missing:
            self.error = missing
            return True
        return False

    def waiting_text(self) -> str:
        """``"waiting for a worker: place 3 in the queue (2 jobs running)"`` while queued, else ``""``."""
        job = self.job
        if job is None or job.state != "queued":
            return ""
        place = job.position()
        if place == 0:
            return ""
        st = self.queue.status()
        return (f"waiting for a worker: place {place} in the queue ({st['running']} of {st['workers']} "
                "workers busy)")

    def detach(self) -> None:
        """Stop the current job and ignore whatever it still sends (its data set or map is gone)."""
        job, self.job = self.job, None
        if job is not None and job.active:
            job.stop()

    def wait(self, timeout: float = 120.0) -> bool:
        """Block until the current job has ended (True) or ``timeout`` s passed; never on the queue's thread."""
        job = self.job
        if job is None or threading.current_thread().name == "latentlab-jobs":
            return True
        return job.wait(timeout)

    def bump(self) -> None:
        self.version += 1
