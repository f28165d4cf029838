"""The CG map of a session and its consistency check (a job in a worker process)."""

from __future__ import annotations

import param

from .common import JobState, message


def _map_kinds() -> list[str]:
    from latentlab.maps.spec import KINDS

    return list(KINDS)


class MapState(JobState):
    """The CG map: kind, spec, outputs, consistency score, spread map, closed form vs numeric A."""

    kind = param.Selector(default="triangle", objects=_map_kinds())
    spec = param.String(default="")
    cg_map = param.Parameter(default=None)
    description = param.String(default="")
    report = param.Dict(default=None, allow_None=True, doc="ConsistencyReport.to_dict()")
    spread = param.Dict(default=None, allow_None=True, doc="edges, values, names of the binned spread of A")
    closed_form = param.Dict(default=None, allow_None=True, doc="closed form vs numeric A")
    checking = param.Boolean(default=False)

    @property
    def data(self):
        return self.session.data

    @property
    def atoms(self):
        return self.session.atoms

    def use_default(self) -> bool:
        """The data set's own map, or the library's suggestion for its system (:func:`latentlab.maps.suggested_map`)."""
        from latentlab.maps import suggested_map

        ds = self.data.dataset
        ok = self.build(ds.default_map or suggested_map(ds.topology, ds.n_atoms))
        if ok:
            try:
                self.atoms.param.update(picked=[int(a) for a in self.cg_map.atoms], selection="", error="")
            except (TypeError, ValueError):  # a map whose atoms are not a plain list
                pass
        return ok

    def from_picked(self, kind: str | None = None) -> bool:
        from latentlab.maps import spec_for_atoms

        kind = kind or self.kind
        if not self.atoms.picked:
            self.error = "pick atoms first (click them in the structure or type a selection)"
            return False
        self.kind = kind
        try:
            spec = spec_for_atoms(kind, self.atoms.picked)
        except ValueError as err:
            self.error = message(err)
            return False
        return self.build(spec)

    def build(self, spec: str) -> bool:
        """Build ``spec`` on the data set (``Dataset.map``); on failure keep the previous map and set ``error``."""
        try:
            cg_map = self.data.dataset.map(spec)
        except Exception as err:
            self.error = f"map {spec!r}: {message(err)}"
            return False
        kind = cg_map.kind if cg_map.kind in self.param.kind.objects else self.kind
        self.detach()  # a check of the previous map is of no use now
        description = "\n".join([cg_map.formula, "outputs:", cg_map.describe()])
        self.param.update(spec=spec, cg_map=cg_map, description=description, error="", report=None, spread=None,
                          closed_form=None, kind=kind, status="", checking=False)
        self.bump()
        return True

    def check(self, blocking: bool = False) -> bool:
        """Consistency score, spread map and closed form vs numeric A, in a worker process."""
        from latentlab_app.worker import map_info

        if self.cg_map is None or self.checking:
            return False
        self.param.update(checking=True, error="", report=None, spread=None, closed_form=None)
        self.submit("consistency", {"source": self.data.load_source, "map": map_info(self.cg_map)},
                    on_done=self._done, priority=0)
        self.bump()
        if blocking:
            self.wait()
        return True

    def _done(self, job) -> None:
        if job is not self.job:
            return
        if job.state == "finished":
            r = job.result
            self.param.update(report=r["report"], spread=r["spread"], closed_form=r["closed_form"], error="")
        elif job.state == "failed":
            self.error = f"consistency check failed: {job.error}"
        self.checking = False
        self.bump()
