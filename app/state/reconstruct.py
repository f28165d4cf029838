"""All-atom structures for walker states (the library's nearest-frame reconstruction)."""

from __future__ import annotations

import numpy as np
import param

from .common import message


class ReconstructState(param.Parameterized):
    """The nearest reference frame in latent space, superposed (``latentlab.reconstruct.NearestFrameReconstructor``)."""

    walker = param.Integer(default=0, bounds=(0, None))
    error = param.String(default="")
    info = param.String(default="")

    def __init__(self, session, **params):
        super().__init__(**params)
        self.session = session
        self._key = None
        self.reconstructor = None

    @property
    def simulation(self):
        return self.session.simulation

    def get_reconstructor(self):
        """Built once per data set and map (the model's map when there is a model)."""
        from latentlab.reconstruct import NearestFrameReconstructor

        model = self.session.train.model
        ds = self.session.data.dataset
        key = (self.session.data.version, self.session.map.version, id(model))
        if key != self._key:
            cg_map = model.cg_map(ds) if model is not None else self.session.map.cg_map
            self.reconstructor = NearestFrameReconstructor.from_dataset(ds, cg_map)
            self._key = key
        return self.reconstructor

    def reference_pdb(self) -> str:
        return self.get_reconstructor().pdb(0)

    def current(self) -> np.ndarray | None:
        """Superposed all-atom positions (n_atoms, 3) nm for the chosen walker's latest state, or None."""
        Q = self.simulation.last_Q
        if Q is None:
            return None
        return self._positions(Q[min(self.walker, len(Q) - 1)])

    def trajectory_length(self) -> int:
        return len(self.simulation.traces)

    def at(self, index: int) -> np.ndarray | None:
        """Positions for recorded frame ``index`` of a traced walker (the first few walkers are traced)."""
        traces = self.simulation.traces
        if not traces:
            return None
        index = int(np.clip(index, 0, len(traces) - 1))
        w = min(self.walker, traces[0][1].shape[0] - 1)
        return self._positions(traces[index][1][w])

    def _positions(self, q) -> np.ndarray | None:
        try:
            x, frames, dist = self.get_reconstructor().reconstruct(np.asarray(q)[None])
            self.param.update(info=f"walker {self.walker}: reference frame {int(frames[0])} "
                                   f"(latent distance {float(dist[0]):.2f} spreads)", error="")
            return x[0]
        except Exception as err:
            self.error = f"reconstruction failed: {message(err)}"
            return None
