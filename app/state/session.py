"""One browser session (or notebook): data set, atoms, map, training, simulation, kinetics, reconstruction."""

from __future__ import annotations

import os
import uuid

import param

from .data import DEFAULT_SOURCE, AtomState, DataState
from .flow import FlowState
from .kinetics import KineticsState
from .mapping import MapState
from .reconstruct import ReconstructState
from .simulation import SimulationState
from .training import TrainState


class Session(param.Parameterized):
    """Everything one browser session (or notebook) works on.

    Parameters
    ----------
    source : str, optional
        Data set to open (default ``$LATENTLAB_DATA``, else chignolin).
    queue : latentlab_app.jobs.JobQueue, optional
        Where training, simulation and consistency checks run (default: the server's one queue).
    """

    def __init__(self, source: str | None = None, queue=None, **params):
        super().__init__(**params)
        from latentlab_app.jobs import default_queue

        self.id = uuid.uuid4().hex[:10]
        self.queue = queue if queue is not None else default_queue()
        self.closed = False
        self.data = DataState(source=source or os.environ.get("LATENTLAB_DATA") or DEFAULT_SOURCE)
        self.atoms = AtomState(self.data)
        self.map = MapState(self)
        self.train = TrainState(self)
        self.kinetics = KineticsState(self)
        self.flow = FlowState(self)
        self.simulation = SimulationState(self)
        self.reconstruct = ReconstructState(self)
        self.train.on_trained = self._after_training
        self.train.param.watch(self._model_changed, "model")
        if self.data.load():
            self.after_load()

    def _model_changed(self, event) -> None:
        """A new model invalidates the simulation (its worker holds the old V) and the kinetics."""
        self.simulation.reset(wait=False)
        self.kinetics.clear()

    def _after_training(self) -> None:
        if self.simulation.after_training and not self.simulation.running and not self.closed:
            self.simulation.start()

    def after_load(self) -> None:
        """New data set: default map, no model, fresh simulation; work on the previous one is stopped."""
        self.simulation.reset(wait=False)
        self.train.detach()
        self.train.param.update(model=None, model_label="", history=[], parity=None, status="", running=False)
        self.atoms.clear()
        self.map.use_default()

    def load(self, source: str) -> bool:
        ok = self.data.load(source)
        if ok:
            self.after_load()
        return ok

    def jobs(self) -> list:
        """This session's queued and running jobs."""
        return self.queue.jobs(owner=self.id)

    def close(self, timeout: float = 5.0) -> None:
        """Stop this session's work (a closed browser tab): queued jobs are dropped, running ones stopped
        (terminated after the queue's grace time); uploaded files are removed."""
        self.closed = True
        self.train.on_trained = None
        self.queue.cancel_owner(self.id)
        self.data.remove_uploads()
