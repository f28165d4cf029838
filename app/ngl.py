"""The one NGL component of the dashboard: NGL's own ``ngl.js`` (vendored, MIT) in a Panel ``JSComponent``.

``static/ngl.js`` is ``dist/ngl.js`` of the npm package ``ngl@2.5.0``
(``npm pack ngl@2.5.0``), committed with its licence (``static/NGL-LICENSE``)
so that ``pip install`` alone gives a dashboard that fetches nothing from the
internet.  Panel serves it from the server (``__javascript__`` paths are
relative to this module).  Keep this the only class that lists it: every
class that does adds the 1.3 MB script to every page.

Python -> browser: ``pdb`` (PDB text, loaded from a Blob), ``positions``
(base64 float32 coordinates in Angstrom, ~3x faster than JSON lists),
``highlight`` (atom indices drawn as spheres).  Browser -> Python:
``picked_event = [atom_index, timestamp]`` on every click on an atom.
"""

from __future__ import annotations

import base64

import numpy as np
import param
from panel.custom import JSComponent


def encode_positions(positions_nm) -> str:
    """(n_atoms, 3) nm -> base64 float32 Angstrom, as the component expects."""
    return base64.b64encode((np.asarray(positions_nm, dtype=np.float32) * 10.0).tobytes()).decode("ascii")


class NGLViewer(JSComponent):
    """A molecule in NGL: load PDB text, update coordinates, highlight atoms, report clicked atoms."""

    pdb = param.String(default="", doc="PDB text of the structure")
    positions = param.String(default="", doc="base64 float32 coordinates (Angstrom), see encode_positions")
    highlight = param.List(default=[], doc="0-based atom indices drawn as orange spheres")
    representation = param.String(default="ball+stick", doc="NGL representation(s), comma-separated")
    picked_event = param.List(default=[], doc="[atom_index, timestamp] set by the browser on every click")
    ready = param.Integer(default=0, doc="incremented by the browser each time a structure is drawn")

    __javascript__ = ["static/ngl.js"]

    _esm = """
    export function render({ model, el }) {
      const div = document.createElement('div');
      div.className = 'latentlab-ngl';
      div.style.width = '100%';
      div.style.height = '100%';
      div.style.minHeight = '300px';
      div.style.position = 'relative';
      let stage = null, comp = null, hl = null, pending = false, wake = () => {};

      // NGL runs two requestAnimationFrame loops 60 times a second even when nothing moves (the viewer's
      // animation tick and the mouse observer's hover poll): with software WebGL that is ~6 % of a core per
      // open tab.  Keep them only while something can change (a pointer or key event in the view, new data,
      // an animation such as autoView) and for 2 s after.
      function sleepWhenIdle() {
        let until = performance.now() + 2000;
        const loops = [[stage.viewer, 'animate'], [stage.mouseObserver, '_listen']].map(([obj, name]) => {
          const loop = {run: obj[name], sleeping: false};  // the bound method; it re-requests obj[name]
          obj[name] = () => {
            if (performance.now() > until && stage.animationControls.paused) { loop.sleeping = true; return; }
            loop.run();
          };
          return loop;
        });
        wake = () => {
          until = performance.now() + 2000;
          for (const loop of loops) if (loop.sleeping) { loop.sleeping = false; loop.run(); }
        };
        for (const type of ['pointerdown', 'pointermove', 'wheel', 'keydown', 'touchstart']) {
          div.addEventListener(type, wake, {passive: true});
        }
      }

      function updateHighlight() {
        if (!comp) return;
        wake();
        if (hl) { comp.removeRepresentation(hl); hl = null; }
        const atoms = model.highlight || [];
        if (atoms.length) {
          hl = comp.addRepresentation('spacefill', {sele: '@' + atoms.join(','), color: 'orange', radiusScale: 0.35, opacity: 0.8});
        }
      }
      function updatePositions() {
        if (!comp || !model.positions) return;
        const bin = atob(model.positions);
        const bytes = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
        const xyz = new Float32Array(bytes.buffer);
        if (xyz.length !== comp.structure.atomCount * 3) return;
        wake();
        comp.structure.updatePosition(xyz);
        comp.updateRepresentations({position: true});
      }
      function loadPdb() {
        if (!stage || !model.pdb) return;
        wake();
        stage.removeAllComponents();
        comp = null; hl = null;
        const blob = new Blob([model.pdb], {type: 'text/plain'});
        stage.loadFile(blob, {ext: 'pdb', defaultRepresentation: false}).then((c) => {
          comp = c;
          for (const rep of model.representation.split(',')) {
            c.addRepresentation(rep.trim(), rep.trim() === 'backbone' ? {color: 'residueindex'} : {multipleBond: 'off'});
          }
          updateHighlight();
          updatePositions();
          c.autoView();
          div.dataset.ready = String((Number(div.dataset.ready) || 0) + 1);
          model.ready = model.ready + 1;
        });
      }
      function init() {
        if (stage) return;
        if (div.clientWidth === 0 || div.clientHeight === 0) {
          if (!pending) { pending = true; setTimeout(() => { pending = false; init(); }, 100); }
          return;
        }
        stage = new window.NGL.Stage(div, {backgroundColor: 'white', tooltip: true});
        stage.signals.clicked.add((proxy) => {
          if (proxy && proxy.atom) model.picked_event = [proxy.atom.index, Date.now()];
        });
        sleepWhenIdle();
        new ResizeObserver(() => { if (stage) { wake(); stage.handleResize(); } }).observe(div);
        loadPdb();
      }
      model.on('pdb', loadPdb);
      model.on('highlight', updateHighlight);
      model.on('positions', updatePositions);
      model.on('after_layout', init);
      model.on('remove', () => { if (stage) stage.dispose(); stage = null; });
      setTimeout(init, 50);
      return div;
    }
    """

    def set_positions(self, positions_nm) -> None:
        self.positions = encode_positions(positions_nm)
