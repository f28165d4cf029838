"""Structure & atoms tab: NGL view of the reference structure; pick atoms by clicking or an mdtraj selection."""

from __future__ import annotations

import panel as pn

from latentlab_app.ngl import NGLViewer

from .common import alert, show_error


class StructurePane(pn.viewable.Viewer):
    """NGL view of the reference structure; pick atoms by clicking or an mdtraj selection."""

    def __init__(self, session, **params):
        super().__init__(**params)
        self.s = session
        self.ngl = NGLViewer(height=380, sizing_mode="stretch_width")
        self.selection = pn.widgets.TextInput(label="mdtraj selection (or indices)",
                                              placeholder="name CA and resid 0 5 9")
        self.select_btn = pn.widgets.Button(label="Select", color="primary")
        self.clear_btn = pn.widgets.Button(label="Clear")
        self.listing = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.error = alert()
        self.select_btn.on_click(lambda e: self._select())
        self.selection.param.watch(lambda e: self._select(), "value")  # updates on Enter
        self.clear_btn.on_click(lambda e: self.s.atoms.clear())
        self.ngl.param.watch(self._clicked, "picked_event")
        self.s.atoms.param.watch(lambda e: self.refresh_atoms(), ["picked", "error"])
        self.refresh_structure()

    def _select(self):
        self.s.atoms.select(self.selection.value)

    def _clicked(self, event):
        if event.new:
            self.s.atoms.toggle(int(event.new[0]))

    def refresh_structure(self):
        top = self.s.data.structure_topology()
        ca_only = top.n_atoms > 3 and all(a.name == "CA" for a in top.atoms)
        self.ngl.representation = "ball+stick,backbone" if ca_only else "ball+stick"
        self.ngl.pdb = self.s.data.structure_pdb()
        self.refresh_atoms()

    def refresh_atoms(self):
        atoms = self.s.atoms
        self.ngl.highlight = list(atoms.picked)
        labels = self.s.data.atom_labels(atoms.picked)
        self.listing.object = ("**picked atoms** (click atoms in the viewer to add/remove):\n\n" +
                               (", ".join(labels) if labels else "_none_"))
        show_error(self.error, atoms.error)

    def __panel__(self):
        return pn.Column(self.ngl, pn.Row(self.selection, self.select_btn, self.clear_btn), self.error, self.listing,
                         sizing_mode="stretch_width")
