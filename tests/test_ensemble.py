"""Replica ensembles on Dask: seeds, start frames, merge with replica ids, worker death, killed client, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest

from latentlab.cli import main
from latentlab.data import load
from latentlab.data.ensemble import parse_cluster, replica_seed, start_frames

distributed = pytest.importorskip("distributed")

SAVE = 0.1  # ps between frames in these tests
ALA = ["generate", "alanine-dipeptide", "--save-every", str(SAVE), "--equilibrate", "0.1", "--platform", "Reference",
       "--no-progress"]


def _checkpointed(out: str, replica: int) -> int:
    """Frames replica ``replica`` of the ensemble ``out`` has checkpointed (0 if none yet)."""
    ck = os.path.join(f"{out}.partial", f"replica-{replica:03d}.h5.partial", "checkpoint.npz")
    try:
        with np.load(ck) as z:
            return int(z["n_frames"])
    except (FileNotFoundError, OSError, ValueError, KeyError):  # not there yet, or replaced while reading
        return 0


def _owner_pid(out: str, replica: int) -> int | None:
    try:
        with open(os.path.join(f"{out}.partial", f"replica-{replica:03d}.h5.owner")) as fh:
            return int(json.load(fh)["pid"])
    except (FileNotFoundError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _saved_positions(out: str, replica: int, n_frames: int) -> np.ndarray:
    """Positions in the first checkpointed segments of a replica (exactly ``n_frames`` frames)."""
    work = os.path.join(f"{out}.partial", f"replica-{replica:03d}.h5.partial")
    with np.load(os.path.join(work, "checkpoint.npz")) as z:
        n_segments = int(z["n_segments"])
        assert int(z["n_frames"]) == n_frames
    segs = sorted(f for f in os.listdir(work) if f.startswith("seg-") and f.endswith(".npz") and ".tmp" not in f)
    return np.concatenate([np.load(os.path.join(work, f))["positions"] for f in segs[:n_segments]])


def _assert_contiguous_replicas(ds, replicas: int, frames: int) -> None:
    """Every replica has exactly ``frames`` frames at SAVE, 2 SAVE, ... ps: none duplicated, none lost."""
    assert ds.n_replicas == replicas
    slices = ds.trajectory_slices()
    assert len(slices) == replicas
    for r, s in enumerate(slices):
        assert (ds.replica[s] == r).all()
        np.testing.assert_allclose(ds.time[s], SAVE * np.arange(1, frames + 1), atol=1e-6)


# ----------------------------------------------------------------------------- fast: no cluster


def test_replica_seeds_are_distinct_and_independent_of_the_replica_count():
    seeds = [replica_seed(0, r) for r in range(64)]
    assert len(set(seeds)) == 64 and all(0 <= s < 2**31 - 1 for s in seeds)
    assert replica_seed(0, 3) == replica_seed(0, 3) and replica_seed(1, 3) != replica_seed(0, 3)


def test_start_frames_are_evenly_spaced_and_end_at_the_last_frame():
    assert start_frames(12500, 1) == [12499]
    assert start_frames(12500, 4) == [3124, 6249, 9374, 12499]
    assert start_frames(3, 3) == [0, 1, 2]


@pytest.mark.parametrize("spec", ["remote", "local:0", "local:x", "local:"])
def test_bad_cluster_spec_is_refused(spec):
    with pytest.raises(ValueError, match="--cluster"):
        parse_cluster(spec)
    assert parse_cluster("local") is None and parse_cluster("local:3") == 3


@pytest.mark.parametrize("extra, match", [
    (["--cluster", "local:2"], "--cluster: only applies to replica ensembles"),
    (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler: only applies"),
    (["--replicas", "0"], "--replicas: got 0"),
    (["--replicas", "2", "--cluster", "local:2", "--scheduler", "tcp://127.0.0.1:1"], "either --cluster"),
    (["--replicas", "2", "--cluster", "cloud"], "--cluster: got 'cloud'"),
    (["--replicas", "2", "--start-from", "alanine-dipeptide", "--start-frame", "3"], "--start-frame: is for a single run"),
    (["--replicas", "2", "--start-from", "chignolin"], "start_from: .* atoms but the alanine-dipeptide system has 22"),
    (["--replicas", "2", "--start-from", "double-well"], "analytic system"),
])
def test_ensemble_refusals_are_one_line_and_leave_nothing_behind(tmp_path, capsys, extra, match):
    from latentlab.data import builtin_path

    if "chignolin" in extra and not os.path.exists(builtin_path("chignolin")):
        pytest.skip("built-in chignolin not generated")
    assert main(ALA + ["--ns", "0.01", "--out", str(tmp_path / "ens")] + extra) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert __import__("re").search(match, err), err
    assert os.listdir(tmp_path) == []


def test_a_single_run_never_touches_an_interrupted_ensemble(tmp_path, capsys):
    """--resume without --replicas on an ensemble's OUT.partial/ is refused, the folder left as it was."""
    work = tmp_path / "ens.h5.partial"
    work.mkdir()
    (work / "ensemble.json").write_text(json.dumps({"replicas": 3, "frozen": {}}))
    (work / "replica-000.h5.owner").write_text("x")
    before = sorted(os.listdir(work))
    assert main(ALA + ["--ns", "0.01", "--out", str(tmp_path / "ens.h5"), "--resume"]) == 2
    assert "holds an interrupted ensemble of 3 replicas" in capsys.readouterr().err
    assert sorted(os.listdir(work)) == before
    assert main(ALA + ["--ns", "0.01", "--out", str(tmp_path / "ens.h5"), "--resume", "--replicas", "2"]) == 2
    assert "has 3 replicas, not 2" in capsys.readouterr().err
    assert sorted(os.listdir(work)) == before


def test_an_ensemble_resume_never_touches_a_single_run(tmp_path, capsys):
    single = str(tmp_path / "one.h5")
    assert main(ALA + ["--ns", "0.002", "--out", single]) == 0
    with open(single, "rb") as fh:
        data = fh.read()
    capsys.readouterr()
    assert main(ALA + ["--ns", "0.004", "--out", single, "--resume", "--replicas", "2"]) == 2
    assert "is a single run, not an ensemble" in capsys.readouterr().err
    with open(single, "rb") as fh:
        assert fh.read() == data
    assert sorted(os.listdir(tmp_path)) == ["one.h5"]


# ----------------------------------------------------------------------------- with a local cluster


@pytest.mark.slow
def test_ensemble_from_data_set_frames_merges_replicas_and_extends_on_resume(tmp_path, capsys):
    """Default local cluster: 2 replicas started from frames of the built-in set, own seeds, one merged file."""
    out = str(tmp_path / "ens")
    args = ALA + ["--replicas", "2", "--cluster", "local:2", "--start-from", "alanine-dipeptide", "--equilibrate", "0",
                  "--seed", "5", "--out", out]
    assert main(args + ["--ns", "0.003"]) == 0
    assert "wrote " + out + ".h5: 2 replicas x 30 frames" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["ens.h5"]  # nothing else left behind
    ds = load(out + ".h5")
    _assert_contiguous_replicas(ds, 2, 30)
    with h5py.File(out + ".h5", "r") as fh:
        assert json.loads(fh.attrs["replica_seeds"]) == [replica_seed(5, 0), replica_seed(5, 1)]
        assert json.loads(fh.attrs["replica_start_frames"]) == start_frames(12500, 2) == [6249, 12499]
        assert fh["replica"].dtype == np.int32
    # each replica starts next to its data-set frame (minimised, 0.1 ps later: < 0.1 nm RMS, no alignment),
    # several times closer than to the other replica's frame
    ref = load("alanine-dipeptide")
    a, b = ds.trajectory_slices()
    for s, frame, other in ((a, 6249, 12499), (b, 12499, 6249)):
        x0 = ds.positions[s][0]
        near = np.sqrt(((x0 - ref.positions[frame]) ** 2).sum(-1).mean())
        far = np.sqrt(((x0 - ref.positions[other]) ** 2).sum(-1).mean())
        assert near < 0.1 and 3 * near < far, (near, far)
    assert main(["info", out + ".h5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["replicas"] == 2

    # --resume to a larger --ns (on another cluster) extends every replica; the frames already there stay as they were
    assert main(args + ["--ns", "0.005", "--resume", "--cluster", "local:1"]) == 0
    longer = load(out + ".h5")
    _assert_contiguous_replicas(longer, 2, 50)
    for s_old, s_new in zip(ds.trajectory_slices(), longer.trajectory_slices()):
        np.testing.assert_array_equal(longer.positions[s_new][:30], ds.positions[s_old])
    assert sorted(os.listdir(tmp_path)) == ["ens.h5"]
    assert main(args + ["--ns", "0.005", "--resume"]) == 0  # complete: nothing to do
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.slow
def test_killing_a_worker_mid_run_loses_and_duplicates_no_frame(tmp_path, capsys):
    """2 workers, 4 replicas; one worker process is killed mid-replica and the run still equals an undisturbed one."""
    from distributed import Client, LocalCluster

    ns, frames = "0.15", 1500
    ref_out, out = str(tmp_path / "ref.h5"), str(tmp_path / "killed.h5")
    killed: dict = {}

    def kill_one_worker():
        """When some replica has checkpointed 20-60 % of its frames, SIGKILL the worker process running it."""
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            for r in range(4):
                n = _checkpointed(out, r)
                pid = _owner_pid(out, r)
                if pid is not None and 0.2 * frames <= n <= 0.6 * frames:
                    os.kill(pid, signal.SIGKILL)
                    while _pid_alive(pid):
                        time.sleep(0.01)
                    killed.update(replica=r, pid=pid, frames=_checkpointed(out, r))
                    killed["positions"] = _saved_positions(out, r, killed["frames"])
                    return
            time.sleep(0.02)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      scheduler_kwargs={"dashboard": False}) as cluster, Client(cluster) as client:
        common = ALA + ["--replicas", "4", "--ns", ns, "--checkpoint-every", "0.1", "--scheduler", cluster.scheduler_address]
        assert main(common + ["--out", ref_out]) == 0
        killer = threading.Thread(target=kill_one_worker, daemon=True)
        killer.start()
        assert main(common + ["--out", out]) == 0
        killer.join(5)
        assert len(client.scheduler_info()["workers"]) == 2  # the nanny restarted the killed worker
    printed = capsys.readouterr().out
    assert killed, "the test never found a replica mid-run to kill its worker"
    r, n_saved = killed["replica"], killed["frames"]
    assert f"replica {r}: resuming" in printed and f"at {n_saved} frames" in printed

    ref, ds = load(ref_out), load(out)
    assert ds.n_frames == ref.n_frames == 4 * frames
    np.testing.assert_array_equal(ds.replica, ref.replica)
    np.testing.assert_array_equal(ds.time, ref.time)
    _assert_contiguous_replicas(ds, 4, frames)
    slices = ds.trajectory_slices()
    # the killed replica keeps every checkpointed frame, and continues (new random stream) from there
    np.testing.assert_array_equal(ds.positions[slices[r]][:n_saved], killed["positions"])
    np.testing.assert_array_equal(ds.positions[slices[r]][:n_saved], ref.positions[slices[r]][:n_saved])
    assert not np.array_equal(ds.positions[slices[r]][n_saved:], ref.positions[slices[r]][n_saved:])
    # the other replicas are untouched: bit for bit the undisturbed run (same seeds, Reference platform)
    for q in set(range(4)) - {r}:
        np.testing.assert_array_equal(ds.positions[slices[q]], ref.positions[slices[q]])
    assert sorted(os.listdir(tmp_path)) == ["killed.h5", "ref.h5"]


@pytest.mark.slow
def test_resume_after_a_killed_client_continues_every_replica(tmp_path):
    out = str(tmp_path / "ens.h5")
    frames = 1500
    cmd = [sys.executable, "-m", "latentlab.cli"] + ALA + ["--replicas", "2", "--cluster", "local:2", "--ns", "0.15",
                                                         "--checkpoint-every", "0.1", "--out", out]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the generate subprocess exited early with code {proc.returncode}")
            if all(0.1 * frames <= _checkpointed(out, r) < frames for r in range(2)):
                break
            time.sleep(0.02)
        else:
            pytest.fail("the replicas never both checkpointed")
        workers = [_owner_pid(out, r) for r in range(2)]
    finally:
        proc.kill()
        proc.wait()
    # the worker processes of the killed client's local cluster stop too (no orphan writing into OUT.partial/)
    deadline = time.time() + 20
    while any(_pid_alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_pid_alive(p) for p in workers)
    assert not os.path.exists(out)
    saved = {r: _checkpointed(out, r) for r in range(2)}
    positions = {r: _saved_positions(out, r, saved[r]) for r in range(2)}
    assert main(cmd[3:] + ["--resume"]) == 0
    ds = load(out)
    _assert_contiguous_replicas(ds, 2, frames)
    for r, s in enumerate(ds.trajectory_slices()):
        np.testing.assert_array_equal(ds.positions[s][:saved[r]], positions[r])
    assert sorted(os.listdir(tmp_path)) == ["ens.h5"]


def test_merge_gives_the_all_atom_block_its_own_replica_ids(tmp_path):
    """Two finished replica files with a CA block and a coarser all-atom block merge into one file, ids in both."""
    from latentlab.data.ensemble import Ensemble
    from latentlab.data.generate import GenerateConfig
    from latentlab.data.store import write_h5

    cfg = GenerateConfig(system="alanine-dipeptide", ns=0.0004, out=str(tmp_path / "m.h5"), save_every_ps=0.1,
                         progress=False)
    ens = Ensemble(cfg, 2, log=lambda *a: None)
    os.makedirs(ens.work)
    rng = np.random.default_rng(0)
    masses = np.full(22, 12.0)
    specs = []
    for r in range(2):
        out = os.path.join(ens.work, f"replica-{r:03d}.h5")
        primary = dict(positions=rng.normal(size=(4, 3, 3)), forces=rng.normal(size=(4, 3, 3)), energies=rng.normal(size=4),
                       time=0.1 * np.arange(1, 5), masses=masses[:3])
        allatom = dict(positions=rng.normal(size=(2, 22, 3)), forces=rng.normal(size=(2, 22, 3)), energies=rng.normal(size=2),
                       time=0.2 * np.arange(1, 3), masses=masses, attrs={"atom_indices": np.array([4, 8, 14])})
        write_h5(out, primary, {"name": "m", "temperature": 300.0, "platform": "Reference"}, allatom=allatom,
                 resume_state_xml=f"<State {r}/>")
        specs.append({"out": out})
    ens._merge({"specs": specs, "seeds": [11, 12], "start_frames": None})
    ds = load(str(tmp_path / "m.h5"))
    full = ds.allatom()
    np.testing.assert_array_equal(ds.replica, [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(full.replica, [0, 0, 1, 1])
    assert (ds.n_replicas, full.n_replicas) == (2, 2)
    with h5py.File(str(tmp_path / "m.h5"), "r") as fh:
        assert [s.decode() for s in fh["replica_state_xml"][()]] == ["<State 0/>", "<State 1/>"]
        assert json.loads(fh.attrs["replica_seeds"]) == [11, 12] and fh.attrs["replicas"] == 2
        np.testing.assert_array_equal(fh["allatom"].attrs["atom_indices"], [4, 8, 14])
    assert sorted(os.listdir(tmp_path)) == ["m.h5"]
