"""The dashboard in a real browser: Debian's chromium driven by Playwright's Python client (headless, SwiftShader WebGL).

One server (``latentlab serve``) for the whole module.  Checks: the page loads
with no console errors and no request leaving 127.0.0.1; the NGL canvas draws
the molecule; Train adds loss points; Simulate fills the histogram and the
Kinetics view; Pause stops it; a bad file is a message; three sessions starting
two trainings and a simulation within one second all finish with their own
results; a closed tab's worker process is gone within 5 s.  Screenshots go to
``artifacts/``.  Skipped only when chromium or Playwright is absent on this
machine (``.ci/run`` installs both).
"""

import importlib.util
import os
import re
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _benchmark_helpers():
    """``benchmarks/_common.py`` (the /proc process tree is shared with bench_dashboard), loaded by path."""
    spec = importlib.util.spec_from_file_location("latentlab_benchmarks_common",
                                                  os.path.join(ROOT, "benchmarks", "_common.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_BENCH = _benchmark_helpers()


def chromium_binary():
    """The real chromium binary of Debian's package (not the wrapper script on PATH)."""
    for path in ("/usr/lib/chromium/chromium", "/usr/lib/chromium-browser/chromium-browser"):
        if os.path.exists(path):
            return path
    try:
        out = subprocess.run(["dpkg", "-L", "chromium"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    hits = [line for line in out.splitlines() if line.endswith("chromium/chromium")]
    return hits[0] if hits else None


CHROMIUM = chromium_binary()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                       reason="Debian's chromium is not installed here (apt-get install chromium; .ci/run installs it)"),
]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: str, port: int | None = None, timeout: float = 60.0):
    """Start ``latentlab serve`` and return (process, url, seconds until it printed its URL)."""
    port = port or _free_port()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "latentlab.cli", "serve", "--port", str(port), "--data", data],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    url = None
    while time.perf_counter() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        m = re.search(r"latentlab dashboard: (http://\S+)", line)
        if m:
            url = m.group(1)
            break
    if url is None:
        proc.kill()
        raise RuntimeError(f"latentlab serve did not start (exit {proc.poll()})")
    return proc, url, time.perf_counter() - t0


class PageWatch:
    """Console errors and every request that did not go to localhost."""

    def __init__(self, page):
        self.errors, self.external = [], []
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda err: self.errors.append(str(err)))
        page.route("**/*", self._route)

    def _route(self, route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.external.append(route.request.url)
            route.abort()


def model_sum(page, column):
    """Sum (or length, for non-numeric) of a column over the page's Bokeh ColumnDataSources."""
    return page.evaluate("""(column) => {
        let total = 0;
        for (const doc of Bokeh.documents) {
          for (const m of doc.all_models) {
            if (m.data && m.data[column] !== undefined) {
              for (const v of m.data[column]) { if (Number.isFinite(v)) total += v; }
            }
          }
        }
        return total;
    }""", column)


def column_length(page, column):
    return page.evaluate("""(column) => {
        let n = 0;
        for (const doc of Bokeh.documents) for (const m of doc.all_models)
          if (m.data && m.data[column] !== undefined) n += m.data[column].length;
        return n;
    }""", column)


def canvas_nonblank_fraction(path):
    """Fraction of pixels of a PNG that differ from its corner (background) colour."""
    import numpy as np
    from matplotlib.image import imread

    img = imread(path)[..., :3]
    bg = img[2, 2]
    return float((np.abs(img - bg).sum(-1) > 0.05).mean())


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail("CI must run the browser tests: Debian's chromium is missing (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    old = os.environ.get("LATENTLAB_MODELS")
    os.environ["LATENTLAB_MODELS"] = str(tmp_path_factory.mktemp("models"))  # no model file outside the test
    proc, url, seconds = start_server("alanine-dipeptide")
    if old is None:
        del os.environ["LATENTLAB_MODELS"]
    else:
        os.environ["LATENTLAB_MODELS"] = old
    threading.Thread(target=_drain, args=(proc,), daemon=True).start()  # the server's log must not fill the pipe
    yield url, proc
    stop_server(proc)


def _drain(proc):
    for _ in proc.stdout:
        pass


def job_processes(server_pid: int) -> set[int]:
    """Worker processes of a server: the children of its fork server (Linux /proc)."""
    children = _BENCH.children_by_parent()
    out = set()
    for child in children.get(server_pid, ()):  # the python -m latentlab_app server, then its fork server
        for grandchild in children.get(child, ()):
            out |= set(children.get(grandchild, ()))
    return out


def wait_text(page, text, seconds):
    """Wait for visible text anywhere in the page (locators pierce Panel's shadow roots)."""
    page.get_by_text(text).first.wait_for(timeout=seconds * 1000)


def wait_samples(page, seconds):
    """Wait until the Simulate tab reports samples (a queued or starting simulation reports none)."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if page.get_by_text(re.compile(r"[\d,]+ samples")).count() and sample_count(page) > 0:
            return sample_count(page)
        page.wait_for_timeout(250)
    raise AssertionError("the simulation produced no samples")


def sample_count(page):
    text = page.get_by_text(re.compile(r"[\d,]+ samples")).first.inner_text()
    return int(re.search(r"([\d,]+) samples", text).group(1).replace(",", ""))


def click_tab(page, name):
    page.locator(".bk-tab").filter(has_text=re.compile(f"^{re.escape(name)}$")).first.click()
    page.wait_for_timeout(300)


def stop_server(proc):
    try:
        os.killpg(proc.pid, 15)  # the CLI, the dashboard server it started, its fork server and workers
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        proc.kill()


def open_page(browser, url, height=1100):
    page = browser.new_page(viewport={"width": 1400, "height": height})
    watch = PageWatch(page)
    page.goto(url)
    page.wait_for_selector("div.latentlab-ngl canvas", timeout=60000)
    return page, watch


def test_page_loads_offline_and_ngl_draws_molecule(browser, server, artifacts_dir):
    url, _ = server
    page, watch = open_page(browser, url, 1000)
    page.wait_for_selector("div.latentlab-ngl[data-ready]", timeout=30000)  # the structure was loaded and drawn
    page.wait_for_timeout(1000)
    canvas = page.locator("div.latentlab-ngl canvas").first
    shot = os.path.join(artifacts_dir, "dashboard-ngl-canvas.png")
    canvas.screenshot(path=shot)
    page.screenshot(path=os.path.join(artifacts_dir, "dashboard-structure.png"))
    assert canvas_nonblank_fraction(shot) > 0.01, "the NGL canvas shows no molecule"
    page.get_by_label("or a file path").first.fill("/nonexistent/data.h5")
    page.get_by_role("button", name="Open", exact=True).click()
    wait_text(page, "cannot load", 15)  # a bad file is a message; the session goes on
    click_tab(page, "Train")
    wait_text(page, "CUDA:", 10)
    assert not watch.external, f"requests left localhost: {watch.external}"
    assert not watch.errors, f"console errors: {watch.errors}"
    page.close()


def test_simulate_fills_histogram_and_kinetics_and_pause_stops(browser, server, artifacts_dir):
    url, _ = server
    page, watch = open_page(browser, url)
    page.locator("select").first.select_option("three-atom")
    wait_text(page, "loaded three-atom", 30)
    click_tab(page, "Map & consistency")
    page.get_by_role("button", name="Check consistency").click()
    wait_text(page, re.compile(r"consistency score.*consistent"), 90)
    page.screenshot(path=os.path.join(artifacts_dir, "dashboard-map.png"))
    click_tab(page, "Train")
    _set_param(page, "Epochs", "1")
    page.get_by_role("button", name="Train", exact=True).click()
    wait_text(page, re.compile(r"(finished|stopped) after"), 180)
    assert column_length(page, "train") > 0, "training added no loss points"
    page.screenshot(path=os.path.join(artifacts_dir, "dashboard-train.png"))
    page.get_by_role("button", name="Use exact PMF").click()
    wait_text(page, "exact PMF of three-atom", 15)
    click_tab(page, "Simulate")
    page.get_by_role("button", name="Simulate", exact=True).click()
    wait_samples(page, 60)
    page.wait_for_timeout(3000)
    assert model_sum(page, "model") > 0, "the model histogram stayed empty"
    wait_text(page, "Kinetics: model vs reference", 20)
    wait_text(page, "no time axis", 20)  # analytic samples have no kinetics: said, not an error page
    assert page.get_by_role("button", name="Calibrate friction").count() == 1
    page.screenshot(path=os.path.join(artifacts_dir, "dashboard-simulate.png"), full_page=True)
    t0 = time.perf_counter()
    page.get_by_role("button", name="Pause").click()
    wait_text(page, re.compile(r"paused.*samples"), 5)
    stop_seconds = time.perf_counter() - t0
    samples = sample_count(page)
    page.wait_for_timeout(1500)
    assert sample_count(page) == samples, "Pause did not stop the simulation"
    assert stop_seconds < 2.0, f"Pause took {stop_seconds:.2f} s"
    click_tab(page, "Reconstruct")
    page.wait_for_timeout(1500)
    page.screenshot(path=os.path.join(artifacts_dir, "dashboard-reconstruct.png"))
    assert not watch.external, f"requests left localhost: {watch.external}"
    assert not watch.errors, f"console errors: {watch.errors}"
    page.close()


def test_three_sessions_train_twice_and_simulate_at_once_with_their_own_results(browser, server, artifacts_dir):
    """Issue 10 item 8: two trainings and a simulation started within one second in three tabs all finish."""
    url, server_proc = server
    pages = []
    for _ in range(3):
        page, watch = open_page(browser, url, 1000)
        page.locator("select").first.select_option("three-atom")
        wait_text(page, "loaded three-atom", 30)
        click_tab(page, "Train")
        pages.append((page, watch))
    for (page, _), seed in zip(pages[:2], ("1", "2")):
        _set_param(page, "Epochs", "1")
        _set_param(page, "Seed", seed)
    sim_page = pages[2][0]
    sim_page.get_by_role("button", name="Use exact PMF").click()
    wait_text(sim_page, "exact PMF of three-atom", 15)
    click_tab(sim_page, "Simulate")
    _set_param(sim_page, "N walkers", "128")
    buttons = [pages[0][0].get_by_role("button", name="Train", exact=True).element_handle(),
               pages[1][0].get_by_role("button", name="Train", exact=True).element_handle(),
               sim_page.get_by_role("button", name="Simulate", exact=True).element_handle()]
    t0 = time.perf_counter()
    for button in buttons:
        button.evaluate("b => b.click()")  # a user's click, without Playwright's actionability waits
    assert time.perf_counter() - t0 < 1.0
    for page, _ in pages[:2]:
        wait_text(page, re.compile(r"finished after \d+ epoch"), 240)
    wait_samples(sim_page, 120)
    sim_page.get_by_role("button", name="Pause").click()
    wait_text(sim_page, re.compile(r"paused.*samples"), 5)
    losses = [model_sum(page, "train") for page, _ in pages[:2]]
    assert all(v > 0 for v in losses) and losses[0] != losses[1], losses  # each tab shows its own run
    for i, (page, watch) in enumerate(pages):
        page.screenshot(path=os.path.join(artifacts_dir, f"dashboard-concurrent-{i}.png"))
        assert page.get_by_text(re.compile(r"failed|error", re.I)).count() == 0
        assert not watch.errors and not watch.external, (watch.errors, watch.external)
    # a closed tab's work is stopped and its worker process gone within 5 s
    for page, _ in pages[:2]:
        page.close()  # (their simulations started by themselves after training)
    paused = sample_count(sim_page)
    sim_page.get_by_role("button", name="Simulate", exact=True).click()  # resumes in a new worker process
    deadline = time.perf_counter() + 60
    while sample_count(sim_page) <= paused and time.perf_counter() < deadline:
        sim_page.wait_for_timeout(200)
    mine = job_processes(server_proc.pid)
    assert len(mine) == 1, f"expected the one worker of the simulating tab, found {mine}"
    t0 = time.perf_counter()
    sim_page.close()
    while job_processes(server_proc.pid) & mine and time.perf_counter() - t0 < 10:
        time.sleep(0.1)
    assert not job_processes(server_proc.pid) & mine, "the closed tab's worker is still running"
    assert time.perf_counter() - t0 < 5.0


def _set_param(page, label, value):
    box = page.get_by_label(label, exact=True)
    box.first.fill(value)
    box.first.press("Enter")
