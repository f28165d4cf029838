"""Replica ensembles: R independent OpenMM runs as Dask tasks, merged into one data set.

``latentlab generate SYSTEM --replicas R [--cluster local:N | --scheduler ADDRESS]``
runs R independent replicas of the recipe in :mod:`latentlab.data.generate`
(each ``--ns`` long, so the ensemble holds ``R x --ns``) as tasks of a
``dask.distributed`` cluster:

* default / ``--cluster local[:N]``: an in-process ``LocalCluster`` with N worker
  processes (default: one per core, or per ``--threads`` cores, at most R), one
  task thread each (and ``--threads`` OpenMM threads, default 1); nothing to
  install or start;
* ``--scheduler tcp://HOST:8786``: a running cluster (``dask scheduler`` +
  ``dask worker``, or dask-jobqueue on Slurm; docs/scale-out.md).  Its workers
  need latentlab installed and must see ``OUT.partial/`` (a shared file system).

Layout and fault tolerance
--------------------------
``OUT.partial/ensemble.json`` records the replica count, the frozen settings,
the per-replica seeds and starting frames.  Replica ``r`` is one
:class:`~latentlab.data.generate.Generator` with output
``OUT.partial/replica-RRR.h5``, i.e. it keeps its own checkpointed segments in
``OUT.partial/replica-RRR.h5.partial/`` (written atomically; a segment before
the checkpoint that counts it).  When a worker dies, the scheduler gives its
task to another worker (up to ``distributed.scheduler.allowed-failures`` times,
default 3), and the task resumes the replica from its last checkpoint: the frames
after it are simulated again, none is duplicated or lost.  Each attempt writes
an owner token (``replica-RRR.h5.owner``) and stops at its next checkpoint if
another attempt has taken the replica over (a worker presumed dead but still
running).  ``--resume`` after a killed client resubmits every replica; finished
ones return at once.  When all replicas are finished the client merges them
into ``OUT`` (atomically) and removes ``OUT.partial/``.

Merged file
-----------
Frames are ordered replica by replica; the ``replica`` dataset holds each
frame's replica id (0 .. R-1; also in the all-atom block), so
``Dataset.trajectory_slices()`` gives one slice per replica and
``latentlab info --json`` reports ``replicas``.  The time axis restarts in every
replica exactly as in a single run: frame k (1-based) of a replica is at
``k * save_every`` ps.  Root attributes add ``replicas``, ``replica_seeds``
(JSON), ``replica_start_frames`` (JSON, with ``--start-from``) and
``generate_config`` with an ``ensemble`` entry; the dataset
``replica_state_xml`` (one serialized OpenMM State per replica) lets
``--resume`` extend a finished ensemble to a larger ``--ns``.

Seeds and starting structures
-----------------------------
Replica r uses the seed ``SeedSequence(seed, spawn_key=(r,))`` (independent
streams; a replica's seed does not depend on R).  It starts from the preset
structure (minimised, own Maxwell-Boltzmann velocities, ``--equilibrate`` ps)
or, with ``start_from``, from frame ``(r + 1) * F // R - 1`` of that data set
(F frames; evenly spaced, the last replica at the last frame).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time as _time
import uuid

import numpy as np

from latentlab.data.generate import (_FROZEN, GenerateConfig, Generator, _StartBlock, build_system, nothing_to_resume,
                                     refuse_existing)
from latentlab.io import output_path
from latentlab.validation import fail

_MANIFEST = "ensemble.json"


# --------------------------------------------------------------------------- helpers


def replica_seed(seed: int, replica: int) -> int:
    """Seed of replica ``replica`` of an ensemble with base seed ``seed`` (independent of the replica count)."""
    state = np.random.SeedSequence(int(seed), spawn_key=(int(replica),)).generate_state(1, dtype=np.uint32)[0]
    return int(state % (2**31 - 1))


def start_frames(n_frames: int, replicas: int) -> list[int]:
    """Starting frame of each replica: ``(r + 1) * n_frames // replicas - 1``, evenly spaced, the last at the last frame."""
    return [(r + 1) * n_frames // replicas - 1 for r in range(replicas)]


def parse_cluster(spec: str | None) -> int | None:
    """``"local"`` -> None (one worker per core), ``"local:N"`` -> N."""
    if spec is None or spec == "local":
        return None
    head, _, count = str(spec).partition(":")
    if head != "local" or not count.isdigit() or int(count) < 1:
        fail("--cluster", f"got {spec!r}", "use local or local:N with N >= 1 workers (a running cluster: --scheduler tcp://HOST:8786)")
    return int(count)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _replica_out(work: str, replica: int) -> str:
    return os.path.join(work, f"replica-{replica:03d}.h5")


def _saved_frames(out: str) -> int:
    """Frames a replica has safely on disk: the more of its finished file and its last checkpoint (0 if none)."""
    import h5py

    n = 0
    if os.path.exists(out):
        with h5py.File(out, "r") as fh:
            n = int(fh["positions"].shape[0])
    ck = os.path.join(out + ".partial", "checkpoint.npz")
    if os.path.exists(ck):
        with np.load(ck) as z:
            n = max(n, int(z["n_frames"]))
    return n


def _write_text(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


class ReplicaSuperseded(RuntimeError):
    """Another attempt has taken this replica over (this one was presumed dead)."""


# --------------------------------------------------------------------------- the task (runs on a worker)


def _emitter(topic: str | None):
    """A function sending one progress/log message to the client (a no-op outside a Dask worker)."""
    if topic is None:
        return lambda msg: None
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return lambda msg: None

    def emit(msg):
        try:
            worker.log_event(topic, msg)
        except Exception:  # progress is best effort; never let it stop a replica
            pass

    return emit


def run_replica(spec: dict) -> dict:
    """Run (or resume) one replica; the Dask task.

    Parameters
    ----------
    spec : dict
        ``replica`` (int), ``config`` (a :class:`GenerateConfig` as a dict, ``out`` the replica file),
        ``topic`` (Dask event topic for progress, or None).

    Returns
    -------
    dict
        ``replica``, ``path``, ``frames``, ``frames_this_run``, ``loop_seconds``, ``loop_cpu_seconds``, ``ns_per_day`` (of this
        attempt's simulation loop), ``loop_start``/``loop_end`` (epoch s), ``platform``, ``host``, ``pid``.
    """
    import socket

    replica = int(spec["replica"])
    cfg = GenerateConfig(**spec["config"])
    cfg.resume = os.path.isdir(cfg.out + ".partial") or os.path.exists(cfg.out)
    cfg.overwrite, cfg.progress = False, False
    emit = _emitter(spec.get("topic"))
    token = json.dumps({"attempt": uuid.uuid4().hex, "pid": os.getpid(), "host": socket.gethostname()})
    owner = cfg.out + ".owner"  # who runs this replica now (JSON: attempt, pid, host)
    _write_text(owner, token)

    def guard():
        try:
            with open(owner) as fh:
                current = fh.read()
        except FileNotFoundError:
            current = None
        if current != token:
            raise ReplicaSuperseded(f"replica {replica}: another attempt took it over; this one stops")

    def log(msg):
        msg = str(msg)
        if not msg.startswith(("wrote ", "equilibrating ")):  # the client reports what matters of those
            emit({"replica": replica, "log": msg})

    def on_progress(n_frames, total, new, elapsed):
        emit({"replica": replica, "attempt": token, "frames": int(n_frames), "total": int(total), "new": int(new),
              "elapsed": float(elapsed)})

    gen = Generator(cfg, log=log, on_progress=on_progress, guard=guard)
    t0 = _time.time()
    path = gen.run()
    t1 = _time.time()
    return {"replica": replica, "path": path, "frames": _saved_frames(path), "frames_this_run": gen.frames_this_run,
            "loop_seconds": gen.loop_seconds, "loop_cpu_seconds": gen.loop_cpu_seconds, "ns_per_day": gen.ns_per_day, "loop_start": t1 - gen.loop_seconds,
            "loop_end": t1, "call_start": t0, "platform": gen.platform_name, "host": socket.gethostname(), "pid": os.getpid()}


def _worker_check(work: str) -> dict:
    """What a worker reports before any replica is sent to it."""
    from importlib.metadata import version

    import openmm

    return {"latentlab": version("latentlab"), "openmm": openmm.__version__, "sees_work": os.path.isdir(work)}


# --------------------------------------------------------------------------- the client


class Ensemble:
    """R independent replicas of one generation recipe on a Dask cluster, merged into one data set.

    Parameters
    ----------
    cfg : GenerateConfig
        The recipe; ``ns`` is per replica, ``out`` the merged file, ``seed`` the base seed,
        ``start_from`` an optional data set whose frames start the replicas (``start_frame`` must be None).
    replicas : int
        Number of independent replicas R >= 1.
    cluster : str, optional
        ``"local"`` or ``"local:N"``: an in-process LocalCluster (the default when nothing is given).
    scheduler : str, optional
        Address of a running scheduler, e.g. ``"tcp://10.0.0.1:8786"``.
    client : distributed.Client, optional
        An existing client (not closed here).
    log : callable
        Receives one-line messages.

    Attributes (after :meth:`run`)
    ------------------------------
    results : list of dict
        What each replica's last attempt returned (see :func:`run_replica`).
    wall_seconds : float
        Of the whole call.
    """

    def __init__(self, cfg: GenerateConfig, replicas: int, *, cluster: str | None = None, scheduler: str | None = None,
                 client=None, log=print):
        if isinstance(replicas, bool) or not isinstance(replicas, (int, np.integer)) or replicas < 1:
            fail("--replicas", f"got {replicas!r}", "pass a whole number of replicas >= 1")
        if sum(x is not None for x in (cluster, scheduler, client)) > 1:
            fail("--cluster", "given together with --scheduler (or a client)", "use either --cluster local:N or --scheduler ADDRESS")
        self.n_local = parse_cluster(cluster)
        if scheduler is not None and not str(scheduler).strip():
            fail("--scheduler", "is empty", "pass the scheduler address, e.g. tcp://HOST:8786")
        self.cfg = cfg.resolved()
        if self.cfg.start_frame is not None:
            fail("--start-frame", "is for a single run; replica r starts from frame (r + 1) * F // R - 1 of --start-from",
                 "drop --start-frame")
        self.replicas = int(replicas)
        self.scheduler = scheduler
        self.client = client
        self.log = log
        self.out = self.cfg.out
        self.work = os.path.abspath(self.out) + ".partial"  # absolute: workers may run elsewhere
        self.results: list[dict] = []
        self.wall_seconds = 0.0
        self._initial = [0] * self.replicas  # frames per replica on disk when this call started its replicas

    # -- settings ------------------------------------------------------------
    def _frozen(self) -> dict:
        return {k: getattr(self.cfg, k) for k in _FROZEN}

    def _check_same(self, saved: dict, where: str) -> None:
        now = self._frozen()
        diff = {k: (saved.get(k), now[k]) for k in now if k in saved and saved.get(k) != now[k]}
        if diff:
            fail("resume", f"settings differ from {where}: {diff} (saved, now)",
                 "resume with the same options (only --ns, --platform, --threads and the cluster may change)")

    def _replica_config(self, r: int, seed: int, frame: int | None) -> dict:
        c = dataclasses.replace(self.cfg, out=_replica_out(self.work, r), seed=seed, start_frame=frame, resume=False,
                                overwrite=False, progress=False, name=self.cfg.name,
                                pdb=None if self.cfg.pdb is None else os.path.abspath(self.cfg.pdb))
        return dataclasses.asdict(c)

    # -- main ----------------------------------------------------------------
    def run(self) -> str:
        """Run, resume or extend the ensemble; returns the path of the merged data set."""
        t0 = _time.perf_counter()
        cfg = self.cfg
        had_work = os.path.isdir(self.work) and (cfg.resume or not cfg.overwrite)
        try:
            plan = self._plan()
            if plan is None:
                return self.out
            self._execute(plan)
            path = self._merge(plan)
        except BaseException:
            if not had_work and os.path.isdir(self.work) and not self._anything_saved():
                shutil.rmtree(self.work, ignore_errors=True)  # refused or failed before any frame: leave nothing
            elif os.path.isdir(self.work) and self._anything_saved():
                self.log(f"the replicas' checkpoints are kept in {self.work}/; --resume continues them")
            raise
        finally:
            self.wall_seconds = _time.perf_counter() - t0
        return path

    def _anything_saved(self) -> bool:
        """Has this call saved frames that were not on disk before it (worth keeping for --resume)?"""
        return any(_saved_frames(_replica_out(self.work, r)) > n for r, n in enumerate(self._initial))

    def _plan(self) -> dict | None:
        """Check everything, then create or continue OUT.partial/; returns the manifest (None: nothing to do)."""
        cfg, R = self.cfg, self.replicas
        manifest_path = os.path.join(self.work, _MANIFEST)
        manifest = None
        extend = False
        if cfg.resume:
            if os.path.exists(os.path.join(self.work, "run.json")):
                fail("resume", f"{self.work}/ holds a single run, not an ensemble", "resume it without --replicas")
            if os.path.exists(manifest_path):
                with open(manifest_path) as fh:
                    manifest = json.load(fh)
                if manifest["replicas"] != R:
                    fail("--replicas", f"the interrupted ensemble in {self.work}/ has {manifest['replicas']} replicas, not {R}",
                         f"resume with --replicas {manifest['replicas']}")
                self._check_same(manifest["frozen"], "the interrupted ensemble")
            elif os.path.exists(self.out):
                extend = True
            elif not os.path.isdir(self.work):
                nothing_to_resume(self.work, self.out)
        elif not cfg.overwrite:
            refuse_existing(self.work, self.out)
        output_path(self.out, "data", overwrite=True, inputs=[cfg.pdb, cfg.start_from])

        if manifest is None and extend:
            if os.path.isdir(self.work):  # killed before its manifest was written: nothing in it to keep
                shutil.rmtree(self.work)
            return self._plan_extension()
        if manifest is None:
            # validate the recipe here (a bad --pdb or --start-from fails before any cluster starts)
            _, _, system, masses = build_system(cfg)
            frames = None
            if cfg.start_from is not None:
                block = _StartBlock(cfg.start_from, len(masses), cfg.system)
                block.check_masses(masses)
                frames = start_frames(block.n_frames, R)
            seeds = [replica_seed(cfg.seed, r) for r in range(R)]
            manifest = {"replicas": R, "frozen": self._frozen(), "seeds": seeds, "start_frames": frames}
            if os.path.isdir(self.work):  # --overwrite, or a --resume of a folder killed before its manifest
                shutil.rmtree(self.work)
            os.makedirs(self.work)
            _write_text(manifest_path, json.dumps(manifest, indent=1))
        manifest["specs"] = [self._replica_config(r, manifest["seeds"][r], None if manifest["start_frames"] is None
                                                  else manifest["start_frames"][r]) for r in range(R)]
        self._initial = [_saved_frames(spec["out"]) for spec in manifest["specs"]]
        return manifest

    def _plan_extension(self) -> dict | None:
        """--resume of a finished ensemble to a larger --ns: split it back into replica files and extend each."""
        import h5py

        from latentlab.data.store import read_h5, write_h5

        cfg, R = self.cfg, self.replicas
        prim = read_h5(self.out)
        saved = json.loads(prim["attrs"].get("generate_config", "{}"))
        if "ensemble" not in saved or prim.get("replica") is None:
            fail("resume", f"{self.out} is a single run, not an ensemble", "resume it without --replicas")
        ens = saved["ensemble"]
        if ens["replicas"] != R:
            fail("--replicas", f"{self.out} is an ensemble of {ens['replicas']} replicas, not {R}", f"resume with --replicas {ens['replicas']}")
        self._check_same(saved.get("frozen", {}), self.out)
        rep = prim["replica"]
        counts = np.bincount(rep, minlength=R)
        if counts.min() >= cfg.total_frames:
            self.log(f"{self.out} already has {counts.min()} frames per replica >= {cfg.total_frames} requested; nothing to do")
            return None
        with h5py.File(self.out, "r") as fh:
            if "replica_state_xml" not in fh:
                fail("resume", f"{self.out} has no stored final states", "regenerate it, or choose another --out")
            states = [s.decode() if isinstance(s, bytes) else str(s) for s in fh["replica_state_xml"][()]]
        full = read_h5(self.out, "allatom") if prim["has_allatom"] else None
        manifest = {"replicas": R, "frozen": self._frozen(), "seeds": ens["seeds"], "start_frames": ens.get("start_frames")}
        os.makedirs(self.work)
        _write_text(os.path.join(self.work, _MANIFEST), json.dumps(manifest, indent=1))
        attrs = {k: v for k, v in prim["attrs"].items() if k not in ("format", "format_version", "units", "replicas",
                                                                      "replica_seeds", "replica_start_frames")}
        keys = ("positions", "forces", "energies", "time", "masses", "topology_pdb", "constraint_group")
        for r in range(R):
            spec = self._replica_config(r, ens["seeds"][r], None if ens.get("start_frames") is None else ens["start_frames"][r])
            frozen_r = {k: spec[k] for k in _FROZEN}
            block = {k: (prim[k][rep == r] if k in ("positions", "forces", "energies", "time") else prim.get(k)) for k in keys}
            allatom = None
            if full is not None:
                mask = full["replica"] == r
                allatom = {k: (full[k][mask] if k in ("positions", "forces", "energies", "time") else full.get(k)) for k in keys}
                allatom["attrs"] = {k: v for k, v in full["attrs"].items() if k in ("atom_indices", "forces_aggregated")}
            write_h5(spec["out"], block, {**attrs, "seed": spec["seed"], "generate_config": json.dumps({"frozen": frozen_r})},
                     allatom=allatom, resume_state_xml=states[r])
        self.log(f"extending {self.out}: {R} replicas from {counts.min()} to {cfg.total_frames} frames each")
        manifest["specs"] = [self._replica_config(r, ens["seeds"][r], None if ens.get("start_frames") is None
                                                  else ens["start_frames"][r]) for r in range(R)]
        self._initial = [int(c) for c in counts]
        return manifest

    # -- the cluster ---------------------------------------------------------
    def _connect(self):
        """Return ``(client, closers)``."""
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            fail("--replicas", "needs dask.distributed, which is not installed", 'pip install "dask[distributed]"')
        if self.client is not None:
            return self.client, []
        if self.scheduler is not None:
            try:
                client = Client(self.scheduler, timeout="30s")
            except OSError as err:
                fail("--scheduler", f"could not connect to {self.scheduler} ({err})",
                     "start one with `dask scheduler` and `dask worker ADDRESS`, or drop --scheduler for a local cluster")
            return client, [client]
        n = self.n_local or max(1, min(self.replicas, _cores() // self.cfg.threads))  # one core per OpenMM thread
        # Dask's own log lines (a failed task's traceback, a restarted worker) stay quiet: the error is re-raised
        # here as one message, and a replica that resumes after its worker died says so.
        try:
            # no dashboard (start `dask scheduler` for one): the scheduler's HTTP routes on a free port, not 8787
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   scheduler_kwargs={"dashboard": False}, silence_logs=logging.CRITICAL)
        except (RuntimeError, OSError) as err:  # e.g. a Python session whose main module cannot be re-imported
            fail("--cluster", f"could not start {n} local Dask worker processes ({type(err).__name__}: {err})",
                 "run from the latentlab command or a script with an `if __name__ == '__main__':` guard, "
                 "or start `dask scheduler` + `dask worker` and pass --scheduler")
        client = Client(cluster)
        return client, [client, cluster]

    def _check_workers(self, client) -> None:
        if not client.scheduler_info().get("workers"):
            self.log("no Dask workers connected yet; the replicas wait for them")
            return
        try:
            info = client.run(_worker_check, os.path.abspath(self.work))
        except Exception as err:  # a worker that cannot import latentlab fails here, not in every task
            fail("--scheduler", f"the Dask workers cannot run latentlab ({type(err).__name__}: {err})",
                 "install the same latentlab (and OpenMM) in the workers' environment")
        blind = [w for w, i in info.items() if not i["sees_work"]]
        if blind:
            fail("--scheduler", f"{len(blind)} worker(s) cannot see {os.path.abspath(self.work)} (e.g. {blind[0]})",
                 "write --out to a file system that every worker mounts at the same path")

    def _execute(self, plan: dict) -> None:
        cfg, R = self.cfg, self.replicas
        token = uuid.uuid4().hex[:8]
        topic = f"latentlab-generate-{token}"
        specs = [{"replica": r, "config": plan["specs"][r], "topic": topic} for r in range(R)]
        latest: dict = {}  # replica -> last progress message
        attempts: dict = {}  # attempt token -> frames simulated by it
        logs: list = []

        def on_event(event):
            _, msg = event
            if "log" in msg:
                logs.append(f"replica {msg['replica']}: {msg['log']}")
            else:
                latest[msg["replica"]] = msg
                attempts[msg["attempt"]] = msg["new"]

        initial = list(self._initial)
        client, closers = self._connect()
        bar = None
        try:
            self._check_workers(client)
            client.subscribe_topic(topic, on_event)
            if self.client is not None or self.scheduler is not None:
                where = client.scheduler.address
            else:
                where = f"a local cluster of {len(client.scheduler_info()['workers'])} workers"
            self.log(f"{R} replicas x {cfg.ns:g} ns of {cfg.system} on {where}")
            futures = [client.submit(run_replica, spec, key=f"latentlab-replica-{r:03d}-{token}", pure=False)
                       for r, spec in enumerate(specs)]
            total_ps = R * cfg.total_frames * cfg.save_every_ps
            if cfg.progress:
                from tqdm import tqdm

                bar = tqdm(total=round(total_ps, 6), initial=round(sum(initial) * cfg.save_every_ps, 6), unit="ps",
                           desc=f"generate {cfg.system} x{R}", mininterval=1.0, file=sys.stderr, dynamic_ncols=True)
            t_start = _time.perf_counter()
            shown = 0
            while True:
                errored = [f for f in futures if f.status in ("error", "cancelled")]
                if errored:
                    errored[0].result()  # re-raises the replica's exception here
                n_done = sum(f.status == "finished" for f in futures)
                for line in logs[shown:]:
                    (bar.write if bar is not None else self.log)(line)
                shown = len(logs)
                if bar is not None:
                    frames = sum(latest[r]["frames"] if r in latest else initial[r] for r in range(R))
                    new_ps = sum(attempts.values()) * cfg.save_every_ps
                    rate = new_ps / 1000.0 / max(_time.perf_counter() - t_start, 1e-9) * 86400.0
                    bar.n = round(frames * cfg.save_every_ps, 6)
                    bar.set_postfix_str(f"{rate:.1f} ns/day, {n_done}/{R} done", refresh=False)
                    bar.refresh()
                if n_done == R:
                    if bar is not None:
                        bar.n = bar.total
                        bar.refresh()
                    break
                _time.sleep(0.5)
            self.results = client.gather(futures)
        except Exception as err:
            from concurrent.futures import CancelledError

            from distributed import KilledWorker
            from distributed.comm import CommClosedError

            if isinstance(err, KilledWorker):
                fail("--replicas", f"a replica's worker died too often ({err})",
                     f"check the workers (memory, logs), then continue with --resume (checkpoints are in {self.work}/)")
            if isinstance(err, (CancelledError, CommClosedError)):
                fail("--scheduler", f"the Dask cluster lost the replicas ({type(err).__name__}: {err})",
                     f"check that the scheduler runs, then continue with --resume (checkpoints are in {self.work}/)")
            raise
        finally:
            if bar is not None:
                bar.close()
            try:
                client.unsubscribe_topic(topic)
            except Exception:
                pass
            for c in closers:
                c.close()
        for line in logs[shown:]:
            self.log(line)
        new_ns = sum(r["frames_this_run"] for r in self.results) * cfg.save_every_ps / 1000.0
        per = ", ".join(f"{r['ns_per_day']:.0f}" for r in self.results)
        self.log(f"simulated {new_ns:.4f} ns in {R} replica{'s' if R != 1 else ''} (ns/day per replica: {per})")

    # -- merge ---------------------------------------------------------------
    def _merge(self, plan: dict) -> str:
        import h5py

        from latentlab.data.store import read_h5, write_h5

        cfg, R = self.cfg, self.replicas
        paths = [s["out"] for s in plan["specs"]]
        prims = [read_h5(p) for p in paths]
        for r, p in enumerate(prims):
            expected = np.arange(1, len(p["time"]) + 1) * cfg.save_every_ps
            if len(p["time"]) < cfg.total_frames or not np.allclose(p["time"], expected, atol=1e-6 * expected[-1]):
                raise RuntimeError(f"internal error: replica {r} has {len(p['time'])} frames, or its times are not contiguous; "
                                   f"{self.work}/ is kept for inspection")
        n = [len(p["time"]) for p in prims]
        arrays = ("positions", "forces", "energies", "time")
        primary = {k: np.concatenate([p[k] for p in prims]) for k in arrays}
        primary["replica"] = np.repeat(np.arange(R), n)
        for k in ("masses", "topology_pdb", "constraint_group"):
            primary[k] = prims[0].get(k)
        allatom = None
        if prims[0]["has_allatom"]:
            fulls = [read_h5(p, "allatom") for p in paths]
            allatom = {k: np.concatenate([f[k] for f in fulls]) for k in arrays}
            allatom["replica"] = np.repeat(np.arange(R), [len(f["time"]) for f in fulls])
            for k in ("masses", "topology_pdb", "constraint_group"):
                allatom[k] = fulls[0].get(k)
            allatom["attrs"] = {k: v for k, v in fulls[0]["attrs"].items() if k in ("atom_indices", "forces_aggregated")}
        attrs = {k: v for k, v in prims[0]["attrs"].items() if k not in ("format", "format_version", "units", "start_frame")}
        attrs.update(
            name=cfg.name, seed=int(cfg.seed), replicas=R, replica_seeds=json.dumps(plan["seeds"]),
            platform=",".join(sorted({p["attrs"].get("platform", "") for p in prims})), command=" ".join(sys.argv),
            generate_config=json.dumps({"frozen": self._frozen(),
                                        "ensemble": {"replicas": R, "seeds": plan["seeds"], "start_frames": plan["start_frames"]}}),
        )
        if plan["start_frames"] is not None:
            attrs["replica_start_frames"] = json.dumps(plan["start_frames"])
        tmp = os.path.join(self.work, "merged.h5")
        write_h5(tmp, primary, attrs, allatom=allatom)
        with h5py.File(tmp, "a") as fh:  # one final OpenMM state per replica, for --resume to a larger --ns
            fh.create_dataset("replica_state_xml", data=[p["resume_state_xml"] for p in prims], dtype=h5py.string_dtype())
        os.replace(tmp, self.out)
        shutil.rmtree(self.work, ignore_errors=True)
        self.log(f"wrote {self.out}: {R} replica{'s' if R != 1 else ''} x {n[0]} frames x {primary['positions'].shape[1]} atoms"
                 + (f", all-atom block {len(allatom['time'])} frames" if allatom else "")
                 + f" ({os.path.getsize(self.out) / 1e6:.2f} MB)")
        return self.out


def generate_ensemble(cfg: GenerateConfig, replicas: int, *, cluster: str | None = None, scheduler: str | None = None,
                      client=None, log=print) -> str:
    """Run (or resume) a replica ensemble; returns the path of the merged data set (see :class:`Ensemble`)."""
    return Ensemble(cfg, replicas, cluster=cluster, scheduler=scheduler, client=client, log=log).run()
