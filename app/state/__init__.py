"""Dashboard state: ``param.Parameterized`` classes that call the library and never import Panel.

One :class:`Session` per browser session (or notebook) owns a data set (:mod:`.data`), the picked
atoms, a CG map with its consistency check (:mod:`.mapping`), a training run (:mod:`.training`), a
latent Langevin simulation (:mod:`.simulation`) with its live kinetics (:mod:`.kinetics`) and the
reconstruction of walker states (:mod:`.reconstruct`).

Heavy work (consistency check, training, simulation) runs as jobs of a
:class:`latentlab_app.jobs.JobQueue`, each in a worker process of its own, so that sessions cannot
break each other; job events update these objects on the queue's thread and the views draw them
from one periodic callback per session.  Every method that can fail on user input records the
message in ``error`` instead of raising: a bad selection or an unreadable file is a message in the
page, never a dead session.

Everything here is tested without a browser (``tests/test_app_state.py``).
"""

from .common import cuda_available, device_choices, message, models_directory
from .data import DEFAULT_SOURCE, FALLBACK_SOURCE, AtomState, DataState
from .kinetics import KineticsState, calibrate_function
from .mapping import MapState
from .reconstruct import ReconstructState
from .session import Session
from .simulation import SimulationState
from .training import TrainState

__all__ = ["Session", "DataState", "AtomState", "MapState", "TrainState", "SimulationState", "KineticsState",
           "ReconstructState", "cuda_available", "device_choices", "message", "models_directory",
           "calibrate_function", "DEFAULT_SOURCE", "FALLBACK_SOURCE"]
