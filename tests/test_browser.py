"""The dashboard in a real browser: Debian's chromium driven by Playwright's Python client (headless, SwiftShader WebGL).

One server (``latentlab serve``) for the whole module.  Checks: the page loads
with no console errors and no request leaving 127.0.0.1; the NGL canvas draws
the molecule; Train adds loss points; Simulate fills the histogram; Pause
stops it.  Screenshots go to ``artifacts/``.  Skipped only when chromium or
Playwright is absent on this machine (``.ci/run`` installs both).
"""

import os
import re
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
def server():
    proc, url, seconds = start_server("alanine-dipeptide")
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_text(page, text, seconds):
    """Wait for visible text anywhere in the page (locators pierce Panel's shadow roots)."""
    page.get_by_text(text).first.wait_for(timeout=seconds * 1000)


def sample_count(page):
    text = page.get_by_text(re.compile(r"[\d,]+ samples")).first.inner_text()
    return int(re.search(r"([\d,]+) samples", text).group(1).replace(",", ""))


def click_tab(page, name):
    page.locator(".bk-tab").filter(has_text=re.compile(f"^{re.escape(name)}$")).first.click()
    page.wait_for_timeout(300)


def test_page_loads_offline_and_ngl_draws_molecule(browser, server, artifacts_dir):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    watch = PageWatch(page)
    page.goto(server)
    page.wait_for_selector("div.latentlab-ngl canvas", timeout=30000)
    page.wait_for_selector("div.latentlab-ngl[data-ready]", timeout=30000)  # the structure was loaded and drawn
    page.wait_for_timeout(1000)
    canvas = page.locator("div.latentlab-ngl canvas").first
    shot = os.path.join(artifacts_dir, "dashboard-ngl-canvas.png")
    canvas.screenshot(path=shot)
    page.screenshot(path=os.path.join(artifacts_dir, "dashboard-structure.png"))
    assert canvas_nonblank_fraction(shot) > 0.01, "the NGL canvas shows no molecule"
    assert not watch.external, f"requests left localhost: {watch.external}"
    assert not watch.errors, f"console errors: {watch.errors}"
    page.close()


def test_simulate_fills_histogram_and_pause_stops(browser, server, artifacts_dir):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    watch = PageWatch(page)
    page.goto(server)
    page.wait_for_selector("div.latentlab-ngl canvas", timeout=30000)
    page.locator("select").first.select_option("three-atom")
    wait_text(page, "loaded three-atom", 30)
    click_tab(page, "Map & consistency")
    page.get_by_role("button", name="Check consistency").click()
    wait_text(page, re.compile(r"consistency score.*consistent"), 60)
    page.screenshot(path=os.path.join(artifacts_dir, "dashboard-map.png"))
    click_tab(page, "Train")
    page.get_by_role("button", name="Use exact PMF").click()
    wait_text(page, "exact PMF of three-atom", 15)
    if os.environ.get("LATENTLAB_BROWSER_TRAIN", "1") == "1" and _has_training():
        _set_param(page, "Epochs", "3")
        page.get_by_role("button", name="Train", exact=True).click()
        wait_text(page, re.compile(r"(finished|stopped) after"), 120)
        assert column_length(page, "train") > 0, "training added no loss points"
        page.screenshot(path=os.path.join(artifacts_dir, "dashboard-train.png"))
        page.get_by_role("button", name="Use exact PMF").click()
    click_tab(page, "Simulate")
    page.get_by_role("button", name="Simulate", exact=True).click()
    wait_text(page, re.compile(r"running.*samples"), 20)
    page.wait_for_timeout(4000)
    filled = model_sum(page, "model")
    assert filled > 0, "the model histogram stayed empty"
    page.screenshot(path=os.path.join(artifacts_dir, "dashboard-simulate.png"))
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


def _has_training():
    try:
        import latentlab.training  # noqa: F401
    except ImportError:
        return False
    return True


def _set_param(page, label, value):
    box = page.get_by_label(label, exact=True)
    box.first.fill(value)
    box.first.press("Enter")
