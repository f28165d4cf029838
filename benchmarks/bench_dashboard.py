"""Dashboard benchmark: live plots, start-up, update rate, memory, and a class sharing one server.

Runs ``latentlab serve`` in a subprocess and drives it with headless Chromium (Debian's package,
through Playwright's Python client), as people would.  Sections (``--sections``, default all):

``plotting``
    Live plots drawn two ways, the dashboard's (Bokeh ``ColumnDataSource.stream``/``patch``) and
    HoloViews' idiom (``DynamicMap`` fed by ``streams.Buffer``/``Pipe``): server CPU per plot update
    (measured in process, no browser) and the updates/s a browser sees for a page of the Simulate
    tab's six live plots pushed 10 times a second.  This decided that the dashboard draws with Bokeh.
``single``
    One session: seconds from launching the server to the URL and to an interactive page; UI updates/s
    with ``--walkers`` walkers simulating (the browser counts changes of the model histogram every
    20 ms); memory (server + fork server + workers, proportional set size from
    ``/proc/PID/smaps_rollup``, so pages a worker shares with the fork server count once) every
    ``--sample`` s over ``--minutes`` of simulation.
``concurrent``
    ``--sessions`` (5) tabs, each on its own analytic data set and seed, train (``--epochs``) and then
    simulate (they start by themselves) at the same time: failures (error messages, failed jobs),
    cross-talk (a tab showing another's coordinates or loss history), UI updates/s in every tab,
    peak memory, and the memory after all tabs are closed.
``open``
    ``--open`` (20) sessions opened at once on the default data set, twice over:

    * by Bokeh's Python client (websocket sessions, no browser), as a class whose browsers run on their
      own machines loads the server: seconds until every session is interactive (an atom selection
      typed in the page is answered), on the idle server and again while 20 training jobs run and wait;
    * by 20 headless Chromium tabs on this same machine: seconds until every tab is interactive and
      every molecule is drawn, the CPU time the server and the browser spent meanwhile (on a 2-core
      machine the browser's own work dominates), then every tab presses Train: how many show their
      place in the queue, and how long until every worker is gone once the tabs are closed.

Prints a table and writes JSON (default ``benchmarks/results/bench_dashboard.json``)::

    python benchmarks/bench_dashboard.py [--sections plotting,single,concurrent,open] [--minutes 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from _common import descendants, write_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANALYTIC = ("three-atom", "double-well", "gaussian-mixture")


# ---------------------------------------------------------------------------- processes
def chromium_binary():
    for path in ("/usr/lib/chromium/chromium", "/usr/lib/chromium-browser/chromium-browser"):
        if os.path.exists(path):
            return path
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except FileNotFoundError:
        pass
    return 0.0


def tree_rss_mb(pid: int) -> float:
    """Memory (PSS, MB) of the server and everything it started (fork server, workers)."""
    return round(pss_mb(pid) + sum(pss_mb(p) for p in descendants(pid)), 1)


def pss_mb(pid: int) -> float:
    """Proportional set size (MB): shared pages (the fork server's torch, copied on write into every worker)
    counted once overall instead of once per process as RSS does."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, PermissionError):
        return rss_mb(pid)
    return 0.0


def memory_breakdown(server_pid: int) -> dict:
    """Memory (MB, PSS) of the server process, its fork server and the workers, and their total."""
    fork = [p for p in descendants(server_pid) if b"forkserver" in _cmdline(p) and _ppid(p) == server_pid]
    workers = worker_pids(server_pid)
    out = {"server": pss_mb(server_pid), "fork_server": sum(pss_mb(p) for p in fork),
           "workers": sum(pss_mb(p) for p in workers), "n_workers": len(workers),
           "total": pss_mb(server_pid) + sum(pss_mb(p) for p in descendants(server_pid))}
    return {k: round(v, 1) for k, v in out.items()}


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def worker_pids(server_pid: int) -> set[int]:
    """Job processes: the children of the fork server below the server."""
    out = set()
    for pid in descendants(server_pid):
        if _ppid(pid) == server_pid and b"forkserver" in _cmdline(pid):
            out |= set(descendants(pid))
    return out


def start_server(data: str, extra_env: dict | None = None):
    """``latentlab serve`` in its own process group; returns (process, url, seconds to the URL)."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               **(extra_env or {}))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "latentlab.cli", "serve", "--port", str(port), "--data", data],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    while True:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError("latentlab serve exited before printing its URL")
        m = re.search(r"latentlab dashboard: (http://\S+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, m.group(1), time.perf_counter() - t0


def stop_server(proc) -> None:
    try:
        os.killpg(proc.pid, 15)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        proc.kill()


def app_server_pid(proc) -> int:
    """The ``python -m latentlab_app`` process below the ``latentlab serve`` CLI."""
    for pid in descendants(proc.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"latentlab_app" in handle.read():
                    return pid
        except OSError:
            pass
    return proc.pid


# ---------------------------------------------------------------------------- browser helpers
COUNT_UPDATES = """([column, seconds]) => new Promise((resolve) => {
  const value = () => { let s = 0, n = 0; for (const doc of Bokeh.documents) for (const m of doc.all_models)
      if (m.data && m.data[column] !== undefined) { let i = 0; for (const v of m.data[column]) { i += 1; n += 1;
        if (Number.isFinite(v)) s += v * (1 + 1e-3 * i); } } return s + n; };
  let last = value(), changes = 0;
  const t0 = performance.now();
  const timer = setInterval(() => {
    const v = value();
    if (v !== last) { changes += 1; last = v; }
    if (performance.now() - t0 > seconds * 1000) { clearInterval(timer); resolve(changes / seconds); }
  }, 20);
})"""


def updates_per_second(page, column: str, seconds: float) -> float:
    return round(page.evaluate(COUNT_UPDATES, [column, seconds]), 2)


def tab(page, name):
    page.locator(".bk-tab").filter(has_text=re.compile(f"^{re.escape(name)}$")).first.click()


def set_field(page, label, value):
    box = page.get_by_label(label, exact=True).first
    box.fill(str(value))
    box.press("Enter")


def text_in_page(page, pattern, flags=0) -> bool:
    return page.get_by_text(re.compile(pattern, flags)).count() > 0


def open_page(browser, url, errors: list):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, timeout=120000)
    return page


def interactive(page, timeout_ms: int = 120000, molecule: bool = True) -> None:
    """The page is up and a tab click is answered by the server (the Train tab is built on demand); with
    ``molecule``, NGL has also drawn the structure first."""
    page.wait_for_selector("div.latentlab-ngl[data-ready]" if molecule else "div.latentlab-ngl", timeout=timeout_ms)
    tab(page, "Train")
    page.get_by_text(re.compile("CUDA:")).first.wait_for(timeout=timeout_ms)


# ---------------------------------------------------------------------------- plotting: Bokeh vs HoloViews
N_BINS = 50


class _Feed:
    """What a simulation sends: three growing histograms, one loss, JS and temperature point per update."""

    def __init__(self):
        import numpy as np

        self.np = np
        self.edges = np.linspace(-3, 3, N_BINS + 1)
        self.t, self.counts, self.rng = 0, np.zeros((3, N_BINS)), np.random.default_rng(0)

    def next(self):
        np = self.np
        self.t += 1
        for i in range(3):
            self.counts[i] += np.histogram(self.rng.normal(size=256), self.edges)[0]
        dens = self.counts / (self.counts.sum(1, keepdims=True) * np.diff(self.edges))
        return self.t, dens, 1.0 / self.t, 0.01, 300 * (1 + 0.05 * self.rng.normal())


def bokeh_plots():
    """The six live plots as the dashboard draws them; returns (layout objects, update function)."""
    import numpy as np
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    feed = _Feed()
    mid = 0.5 * (feed.edges[1:] + feed.edges[:-1])
    loss = ColumnDataSource({"t": [], "train": []})
    js = ColumnDataSource({"t": [], "js": [], "floor": []})
    temp = ColumnDataSource({"t": [], "T": []})
    hists = [ColumnDataSource({"left": feed.edges[:-1], "right": feed.edges[1:], "model": np.zeros(N_BINS), "mid": mid,
                               "reference": np.exp(-mid ** 2 / 2) / np.sqrt(2 * np.pi)}) for _ in range(3)]
    figs = []
    for title, src, cols in (("loss", loss, ["train"]), ("JS", js, ["js", "floor"]), ("T", temp, ["T"])):
        f = figure(height=220, width=300, title=title, toolbar_location=None)
        for c in cols:
            f.line("t", c, source=src)
        figs.append(f)
    for h in hists:
        f = figure(height=220, width=300, toolbar_location=None)
        f.quad(left="left", right="right", bottom=0, top="model", source=h, fill_alpha=0.5)
        f.step("mid", "reference", source=h, mode="center", color="black")
        figs.append(f)

    def update():
        t, dens, j, floor, T = feed.next()
        loss.stream({"t": [t], "train": [j]})
        js.stream({"t": [t], "js": [j], "floor": [floor]})
        temp.stream({"t": [t], "T": [T]}, rollover=400)
        for h, d in zip(hists, dens):
            h.patch({"model": [(slice(0, N_BINS), d)]})

    return figs, update


def holoviews_plots():
    """The same six plots in HoloViews' idiom: DynamicMaps fed by Buffer (series) and Pipe (histograms) streams."""
    import holoviews as hv
    import numpy as np
    from holoviews.streams import Buffer, Pipe

    hv.extension("bokeh")
    feed = _Feed()
    mid = 0.5 * (feed.edges[1:] + feed.edges[:-1])
    loss = Buffer({"t": np.zeros(0), "train": np.zeros(0)}, length=100000, index=False)
    js = Buffer({"t": np.zeros(0), "js": np.zeros(0), "floor": np.zeros(0)}, length=100000, index=False)
    temp = Buffer({"t": np.zeros(0), "T": np.zeros(0)}, length=400, index=False)
    pipes = [Pipe(data=np.zeros(N_BINS)) for _ in range(3)]
    opts = {"height": 220, "width": 300}
    plots = [hv.DynamicMap(lambda data: hv.Curve(data, "t", "train").opts(**opts), streams=[loss]),
             hv.DynamicMap(lambda data: (hv.Curve(data, "t", "js") * hv.Curve(data, "t", "floor")).opts(**opts),
                           streams=[js]),
             hv.DynamicMap(lambda data: hv.Curve(data, "t", "T").opts(**opts), streams=[temp])]
    reference = hv.Curve((mid, np.exp(-mid ** 2 / 2) / np.sqrt(2 * np.pi))).opts(interpolation="steps-mid",
                                                                                  color="black")
    for p in pipes:
        plots.append(hv.DynamicMap(lambda data: hv.Histogram((feed.edges, data)).opts(**opts), streams=[p]) * reference)

    def update():
        t, dens, j, floor, T = feed.next()
        loss.send({"t": np.array([t]), "train": np.array([j])})
        js.send({"t": np.array([t]), "js": np.array([j]), "floor": np.array([floor])})
        temp.send({"t": np.array([t]), "T": np.array([T])})
        for p, d in zip(pipes, dens):
            p.send(d)

    return plots, update


def serve_plots(port: int, period_ms: int) -> None:
    """``--serve-plots``: the two plot pages on /bokeh and /holoviews (run as a subprocess of the benchmark)."""
    os.environ.setdefault("BOKEH_RESOURCES", "server")
    import panel as pn

    def page(kind):
        def make():
            plots, update = bokeh_plots() if kind == "bokeh" else holoviews_plots()
            callback = pn.state.add_periodic_callback(update, period=period_ms)
            pn.state.on_session_destroyed(lambda context: callback.stop())
            return pn.Column(pn.Row(*plots[:3]), pn.Row(*plots[3:]))
        return make

    server = pn.serve({"/bokeh": page("bokeh"), "/holoviews": page("holoviews")}, port=port, address="127.0.0.1",
                      show=False, start=False, websocket_origin=[f"127.0.0.1:{port}", f"localhost:{port}"])
    print("READY", flush=True)
    server.start()
    server.io_loop.start()


def plot_update_cost(kind: str, n: int = 30) -> float:
    """Server CPU (ms) per plot update with the plots attached to a Bokeh document (what a session holds)."""
    import panel as pn
    from bokeh.document import Document

    plots, update = bokeh_plots() if kind == "bokeh" else holoviews_plots()
    doc = Document()
    doc.add_root(pn.Column(*plots).get_root(doc))
    for _ in range(5):
        update()
    t0 = time.process_time()
    for _ in range(n):
        update()
    return round(1000 * (time.process_time() - t0) / n / len(plots), 3)


def section_plotting(args, browser) -> dict:
    out = {"plots_per_page": 6, "requested_updates_per_s": round(1000 / args.plot_period_ms, 1)}
    kinds = ["bokeh"]
    try:
        import holoviews  # noqa: F401

        kinds.append("holoviews")
    except ImportError:
        out["holoviews"] = "not installed"
    for kind in kinds:
        out[f"{kind}_server_cpu_ms_per_plot_update"] = plot_update_cost(kind)
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve-plots", str(port),
                             "--plot-period-ms", str(args.plot_period_ms)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    try:
        proc.stdout.readline()
        for kind in kinds:
            errors = []
            page = open_page(browser, f"http://127.0.0.1:{port}/{kind}", errors)
            page.wait_for_timeout(5000)
            column = "model" if kind == "bokeh" else "top"
            out[f"{kind}_browser_updates_per_s"] = updates_per_second(page, column, args.rate_seconds)
            out[f"{kind}_page_errors"] = errors
            page.close()
            time.sleep(1.0)
    finally:
        stop_server(proc)
    return out


# ---------------------------------------------------------------------------- one session
def get_model(page, data: str, epochs: int) -> dict:
    """The exact PMF for an analytic system, else a training run from the page (seconds)."""
    tab(page, "Train")
    if data in ANALYTIC:
        page.get_by_role("button", name="Use exact PMF").click()
        page.get_by_text(re.compile("exact PMF of")).first.wait_for(timeout=60000)
        return {}
    set_field(page, "Epochs", epochs)
    t = time.perf_counter()
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text(re.compile(r"(finished|stopped) after")).first.wait_for(timeout=3600000)
    return {"training_s": round(time.perf_counter() - t, 1)}


def section_single(args, browser) -> dict:
    proc, url, t_url = start_server(args.data)
    t_launch = time.perf_counter() - t_url
    server = app_server_pid(proc)
    result = {"data": args.data, "walkers": args.walkers, "url_printed_s": round(t_url, 2)}
    try:
        errors = []
        page = open_page(browser, url, errors)
        interactive(page)
        result["interactive_s"] = round(time.perf_counter() - t_launch, 2)
        result.update(get_model(page, args.data, args.epochs))
        tab(page, "Simulate")
        set_field(page, "N walkers", args.walkers)
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Simulate", exact=True).click()
        page.get_by_text(re.compile(r"running.*[1-9][\d,]* samples")).first.wait_for(timeout=120000)
        page.wait_for_timeout(2000)
        result["ui_updates_per_s"] = updates_per_second(page, "model", args.rate_seconds)
        m = re.search(r"(\d+) steps/s", page.get_by_text(re.compile(r"steps/s")).first.inner_text())
        result["sampler_steps_per_s"] = int(m.group(1)) if m else None
        samples, t0 = [], time.perf_counter()
        end = t0 + 60.0 * args.minutes
        while True:
            samples.append((round(time.perf_counter() - t0, 1), tree_rss_mb(server)))
            if time.perf_counter() >= end:
                break
            page.wait_for_timeout(int(1000 * min(args.sample, max(0.1, end - time.perf_counter()))))
        page.screenshot(path=os.path.join(ROOT, "benchmarks", "results", "bench_dashboard.png"), full_page=True)
        result["ui_updates_per_s_end"] = updates_per_second(page, "model", min(5.0, args.rate_seconds))
        result["memory_breakdown_end_mb"] = memory_breakdown(server)
        page.get_by_role("button", name="Pause").click()
        result["page_errors"] = errors
        page.close()
    finally:
        stop_server(proc)
    result["memory_mb"] = memory_summary(samples, args.minutes)
    return result


def memory_summary(samples, minutes) -> dict:
    mem = [m for _, m in samples]
    late = [(t, m) for t, m in samples if t >= 60.0]
    slope = None
    if len(late) >= 2:
        import numpy as np

        tt, mm = np.array(late).T
        slope = round(float(np.polyfit(tt / 60.0, mm, 1)[0]), 2)
    return {"first": mem[0], "last": mem[-1], "max": max(mem), "slope_mb_per_min_after_1min": slope,
            "minutes": minutes, "samples": samples}


# ---------------------------------------------------------------------------- a class on one server
def expected_names(data: str) -> list[str]:
    from latentlab.data import load

    return list(load(data).map().names)


def histogram_titles(page) -> list[str]:
    return page.evaluate("""() => { const out = []; for (const doc of Bokeh.documents) for (const m of doc.all_models)
        if (m.type === 'Title' && /^p\\(.*\\)$/.test(m.text || '')) out.push(m.text); return out; }""")


def loss_signature(page) -> float:
    return page.evaluate("""() => { let s = 0; for (const doc of Bokeh.documents) for (const m of doc.all_models)
        if (m.data && m.data.train !== undefined) { let i = 0; for (const v of m.data.train) { i += 1;
          if (Number.isFinite(v)) s += v * i; } } return s; }""")


def section_concurrent(args, browser) -> dict:
    proc, url, _ = start_server("three-atom", {"LATENTLAB_TIME_SLICE": str(args.time_slice)})
    server = app_server_pid(proc)
    time.sleep(10.0)  # the fork server has imported torch and the library
    idle = memory_breakdown(server)
    tabs, errors, peak = [], [], 0.0
    sets = [ANALYTIC[i % len(ANALYTIC)] for i in range(args.sessions)]
    try:
        for i, data in enumerate(sets):
            page = open_page(browser, url, errors)
            interactive(page)
            page.locator("select").first.select_option(data)
            page.get_by_text(f"loaded {data}").first.wait_for(timeout=60000)
            tab(page, "Train")
            set_field(page, "Epochs", args.epochs)
            set_field(page, "Seed", i + 1)
            tabs.append(page)
        t0 = time.perf_counter()
        for page in tabs:
            page.get_by_role("button", name="Train", exact=True).click()
        failures = []
        for i, page in enumerate(tabs):
            try:
                page.get_by_text(re.compile(r"finished after \d+ epochs")).first.wait_for(timeout=900000)
            except Exception:
                failures.append(f"tab {i}: training did not finish")
            peak = max(peak, tree_rss_mb(server))
        training_s = time.perf_counter() - t0
        for page in tabs:
            tab(page, "Simulate")
        end = time.perf_counter() + args.concurrent_seconds
        while time.perf_counter() < end:
            peak = max(peak, tree_rss_mb(server))
            time.sleep(2.0)
        rates = [updates_per_second(page, "model", 5.0) for page in tabs]
        failures += concurrent_failures(tabs, sets)
        crosstalk = concurrent_crosstalk(tabs, sets)
        before_close = memory_breakdown(server)
        for page in tabs:
            page.close()
        time.sleep(10.0)
        after_close = memory_breakdown(server)
        workers_left = len(worker_pids(server))
    finally:
        stop_server(proc)
    return {"sessions": args.sessions, "data_sets": sets, "epochs": args.epochs, "time_slice_s": args.time_slice,
            "trainings_s": round(training_s, 1), "simulated_s": args.concurrent_seconds, "failures": failures,
            "n_failures": len(failures), "crosstalk": crosstalk, "n_crosstalk": len(crosstalk),
            "ui_updates_per_s": rates, "memory_idle_mb": idle, "memory_peak_mb": peak,
            "memory_before_close_mb": before_close, "memory_10s_after_close_mb": after_close, "workers_left_after_close": workers_left, "page_errors": errors}


def concurrent_failures(tabs, sets) -> list[str]:
    out = []
    for i, page in enumerate(tabs):
        tab(page, "Simulate")
        page.wait_for_timeout(300)
        if text_in_page(page, r"failed|display error|cannot ", re.I):
            out.append(f"tab {i}: an error message is shown")
        m = re.search(r"([\d,]+) samples", page.get_by_text(re.compile(r"[\d,]+ samples")).first.inner_text())
        if not m or int(m.group(1).replace(",", "")) == 0:
            out.append(f"tab {i}: its simulation produced no samples")
    return out


def concurrent_crosstalk(tabs, sets) -> list[str]:
    """A tab showing another data set's coordinates, or the same loss history as another tab."""
    out, signatures = [], []
    for i, (page, data) in enumerate(zip(tabs, sets)):
        titles = sorted(histogram_titles(page))
        want = sorted(f"p({n})" for n in expected_names(data))
        if titles != want:
            out.append(f"tab {i} ({data}) shows histograms {titles}, expected {want}")
        tab(page, "Train")
        deadline = time.perf_counter() + 10
        while loss_signature(page) == 0 and time.perf_counter() < deadline:
            page.wait_for_timeout(250)
        signatures.append(loss_signature(page))
    for i in range(len(signatures)):
        if signatures[i] == 0:
            out.append(f"tab {i} shows no loss history")
        for j in range(i):
            if signatures[i] == signatures[j] != 0:
                out.append(f"tabs {j} and {i} show the same loss history (seeds differ)")
    return out


def cpu_seconds(pids) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def browser_pids() -> list[int]:
    """Chromium's processes (this benchmark's browser and its renderers)."""
    return [p for p in descendants(os.getpid()) if _cmdline(p).find(b"chromium") >= 0]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def queue_places(pages, seconds: float) -> dict:
    """Wait until every tab says it trains or waits (its place in the queue); count both."""
    t0 = time.perf_counter()
    while True:
        places = [text_in_page(p, r"place \d+ in the queue") for p in pages]
        training = [text_in_page(p, r"epoch \d+|preparing force-matching|loading the data set") for p in pages]
        if all(a or b for a, b in zip(places, training)) or time.perf_counter() - t0 > seconds:
            return {"places": sum(places), "training": sum(t and not p for p, t in zip(places, training)),
                    "seconds": time.perf_counter() - t0}
        time.sleep(0.5)


SELECTION, ANSWER = "name CA and resid 0", re.compile(r"0: \w+\d+ CA")


def page_and_assets(url: str) -> int:
    """GET the page and every script/style sheet it links from this server, as a browser with an empty cache
    does; returns the bytes received."""
    from urllib.parse import urljoin

    html = urllib.request.urlopen(url, timeout=120).read()
    total = len(html)
    for ref in re.findall(rb'(?:src|href)="([^"]+\.(?:js|css)[^"]*)"', html):
        target = urljoin(url, ref.decode())
        if target.startswith(url.rstrip("/")):
            total += len(urllib.request.urlopen(target, timeout=120).read())
    return total


def websocket_sessions(url: str, n: int, server_pid: int) -> dict:
    """``n`` sessions opened at once by Bokeh's Python client (one thread each, no browser): each fetches the
    page and every script and style sheet it names (as a browser with an empty cache), pulls the page's
    document over the server's websocket, types an atom selection and waits for the server's answer.
    What the server needs for ``n`` users whose browsers run on their own machines.
    """
    from bokeh.client import pull_session
    from bokeh.models import TextInput

    import latentlab_app.ngl  # noqa: F401  (the dashboard's own Bokeh model, so that the document decodes)
    import panel  # noqa: F401  (Panel's Bokeh models)

    done, sessions, errors = {}, [], []

    def user(i, t0):
        try:
            fetched = page_and_assets(url)
            session = pull_session(url=url)
            sessions.append(session)
            pulled = time.perf_counter() - t0
            models = session.document.models
            box = next(m for m in models if isinstance(m, TextInput) and "selection" in (m.title or ""))
            box.value = SELECTION
            while time.perf_counter() - t0 < 120:
                if any(ANSWER.search(str(getattr(m, "text", ""))) for m in list(session.document.models)):
                    done[i] = (round(pulled, 2), round(time.perf_counter() - t0, 2), fetched)
                    return
                time.sleep(0.02)
            errors.append(f"session {i}: no answer in 120 s")
        except Exception as exc:  # a failed session is a result, not a crash of the benchmark
            errors.append(f"session {i}: {type(exc).__name__}: {exc}")

    cpu0, t0 = cpu_seconds([server_pid]), time.perf_counter()
    threads = [threading.Thread(target=user, args=(i, t0), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    cpu = round(cpu_seconds([server_pid]) - cpu0, 2)
    for session in sessions:
        session.close()
    ready = sorted(v[1] for v in done.values())
    return {"sessions": n, "interactive": len(ready), "all_interactive_s": max(ready) if len(ready) == n else None,
            "median_interactive_s": ready[len(ready) // 2] if ready else None,
            "all_documents_pulled_s": max((v[0] for v in done.values()), default=None),
            "server_cpu_s": cpu, "bytes_served_per_session": max((v[2] for v in done.values()), default=None),
            "errors": errors[:5]}


def section_open(args, browser) -> dict:
    proc, url, _ = start_server(args.open_data)
    server = app_server_pid(proc)
    errors, pages = [], []
    try:
        time.sleep(10.0)  # the fork server has imported torch and the library
        idle = memory_breakdown(server)
        # the server alone: 20 users whose browsers run on their own machines, as in a class
        server_only = websocket_sessions(url, args.open, server)
        get_s = []  # the server's share of a new session: the page (session and document built), no browser
        for _ in range(5):
            t_get = time.perf_counter()
            urllib.request.urlopen(url, timeout=60).read()
            get_s.append(time.perf_counter() - t_get)
        t0 = time.perf_counter()
        for _ in range(args.open):
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url, wait_until="commit", timeout=120000)
            pages.append(page)
        opened_s = round(time.perf_counter() - t0, 1)  # Playwright opens the tabs one after the other
        cpu0 = {"server": cpu_seconds([server]), "browser": cpu_seconds(browser_pids())}
        ready, drawn, loaded = [], [], []
        for page in pages:  # interactive: an atom selection typed in the page is answered by the server
            page.wait_for_selector("div.latentlab-ngl", timeout=180000)
            loaded.append(round(time.perf_counter() - t0, 1))
            # every user types at once (20 people, 20 tabs), not one after the other
            set_field(page, "mdtraj selection (or indices)", SELECTION)
        for page in pages:  # the time at which each answer was seen (an upper bound: the pages are polled in turn)
            page.get_by_text(ANSWER).first.wait_for(timeout=180000)
            ready.append(round(time.perf_counter() - t0, 1))
        cpu = {k: round(cpu_seconds([server] if k == "server" else browser_pids()) - v, 1) for k, v in cpu0.items()}
        for page in pages:
            page.wait_for_selector("div.latentlab-ngl[data-ready]", timeout=180000)
            drawn.append(round(time.perf_counter() - t0, 1))
        for page in pages:
            tab(page, "Train")
            page.get_by_role("button", name="Train", exact=True).click()
        placed = queue_places(pages, 30.0)
        # and again while those tabs' jobs run and wait in the queue
        server_only_queued = websocket_sessions(url, args.open, server)
        with_work = memory_breakdown(server)
        t_close = time.perf_counter()
        for page in pages:
            page.close()
        while worker_pids(server) and time.perf_counter() - t_close < 30:
            time.sleep(0.1)
        gone_s = round(time.perf_counter() - t_close, 2)
        time.sleep(5.0)
        after = memory_breakdown(server)
    finally:
        stop_server(proc)
    return {"tabs": args.open, "data": args.open_data, "all_interactive_s": max(ready), "interactive_s": ready,
            "pages_loaded_s": loaded, "tabs_opened_s": opened_s, "server_page_s_median": round(sorted(get_s)[2], 3),
            "all_molecules_drawn_s": max(drawn), "cpu_seconds_while_opening": cpu,
            "tabs_showing_their_place": placed["places"], "tabs_training": placed["training"],
            "queue_places_seen_s": round(placed["seconds"], 1), "memory_idle_mb": idle,
            "memory_with_20_sessions_mb": with_work, "all_workers_gone_after_close_s": gone_s,
            "memory_5s_after_close_mb": after, "page_errors": errors[:5],
            "server_only": server_only, "server_only_with_jobs_queued": server_only_queued}


# ---------------------------------------------------------------------------- main
def rows_of(result: dict) -> list[tuple[str, object]]:
    rows = []
    p = result.get("plotting")
    if p:
        for kind in ("bokeh", "holoviews"):
            if f"{kind}_server_cpu_ms_per_plot_update" in p:
                rows.append((f"{kind}: server CPU per plot update (ms)", p[f"{kind}_server_cpu_ms_per_plot_update"]))
                rows.append((f"{kind}: browser updates/s, 6 plots at {p['requested_updates_per_s']}/s",
                             p.get(f"{kind}_browser_updates_per_s")))
    s = result.get("single")
    if s:
        m = s["memory_mb"]
        rows += [("server start -> URL printed (s)", s["url_printed_s"]),
                 ("server start -> interactive page (s)", s["interactive_s"]),
                 (f"UI updates/s, {s['walkers']} walkers (start / end)", f"{s['ui_updates_per_s']} / {s['ui_updates_per_s_end']}"),
                 ("sampler steps/s", s["sampler_steps_per_s"]),
                 (f"memory MB first / last / max over {m['minutes']:g} min", f"{m['first']:.0f} / {m['last']:.0f} / {m['max']:.0f}"),
                 ("memory slope after 1 min (MB/min)", m["slope_mb_per_min_after_1min"])]
    c = result.get("concurrent")
    if c:
        rows += [(f"{c['sessions']} sessions training + simulating: failures / cross-talk", f"{c['n_failures']} / {c['n_crosstalk']}"),
                 ("  UI updates/s per tab", ", ".join(str(r) for r in c["ui_updates_per_s"])),
                 ("  memory MB idle / peak / before close / 10 s after close (total)",
                  f"{c['memory_idle_mb']['total']:.0f} / {c['memory_peak_mb']:.0f} / "
                  f"{c['memory_before_close_mb']['total']:.0f} / {c['memory_10s_after_close_mb']['total']:.0f}"),
                 ("  server process alone: idle / before close / after close",
                  f"{c['memory_idle_mb']['server']:.0f} / {c['memory_before_close_mb']['server']:.0f} / "
                  f"{c['memory_10s_after_close_mb']['server']:.0f}")]
    o = result.get("open")
    if o:
        for key, label in (("server_only", "idle server"), ("server_only_with_jobs_queued", "jobs queued")):
            w = o.get(key)
            if w:
                rows.append((f"{w['sessions']} sessions opened at once ({label}, websocket clients): all interactive (s)",
                             f"{w['all_interactive_s']} ({w['interactive']}/{w['sessions']}; server CPU {w['server_cpu_s']} s)"))
        rows += [(f"{o['tabs']} Chromium tabs opened at once on this machine: all interactive (s)", o["all_interactive_s"]),
                 ("  tabs showing their place in the queue / training", f"{o['tabs_showing_their_place']} / {o['tabs_training']}"),
                 ("  all tabs opened by the test browser (s)", o["tabs_opened_s"]),
                 ("  first / last page loaded (s)", f"{min(o['pages_loaded_s'])} / {max(o['pages_loaded_s'])}"),
                 ("  server time for one new session's page, no browser (s)", o["server_page_s_median"]),
                 ("  all molecules drawn (s)", o["all_molecules_drawn_s"]),
                 ("  CPU s while opening: server / browser", f"{o['cpu_seconds_while_opening']['server']} / "
                                                            f"{o['cpu_seconds_while_opening']['browser']}"),
                 ("  all workers gone after closing all tabs (s)", o["all_workers_gone_after_close_s"]),
                 ("  memory MB idle / with sessions / 5 s after close (total)",
                  f"{o['memory_idle_mb']['total']:.0f} / {o['memory_with_20_sessions_mb']['total']:.0f} / "
                  f"{o['memory_5s_after_close_mb']['total']:.0f}"),
                 ("  server process alone: idle / with sessions / after close",
                  f"{o['memory_idle_mb']['server']:.0f} / {o['memory_with_20_sessions_mb']['server']:.0f} / "
                  f"{o['memory_5s_after_close_mb']['server']:.0f}")]
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default="plotting,single,concurrent,open",
                   help="comma-separated sections to run (default all: plotting,single,concurrent,open)")
    p.add_argument("--data", default="three-atom", help="data set of 'single' (default three-atom: exact PMF)")
    p.add_argument("--walkers", type=int, default=1024, help="walkers simulated in 'single' (default 1024)")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the memory session (default 10)")
    p.add_argument("--sample", type=float, default=15.0, help="seconds between memory samples")
    p.add_argument("--rate-seconds", type=float, default=10.0, help="window for the UI update rate")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (single without exact PMF, concurrent)")
    p.add_argument("--sessions", type=int, default=5, help="tabs of 'concurrent'")
    p.add_argument("--concurrent-seconds", type=float, default=60.0, help="simulation time of 'concurrent'")
    p.add_argument("--time-slice", type=float, default=10.0, help="the server's time slice in 'concurrent' (s)")
    p.add_argument("--open", type=int, default=20, help="tabs of 'open'")
    p.add_argument("--open-data", default="chignolin", help="data set of 'open'")
    p.add_argument("--plot-period-ms", type=int, default=100, help="'plotting': ms between pushed updates (default 100)")
    p.add_argument("--serve-plots", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "bench_dashboard.json"))
    args = p.parse_args(argv)
    if args.serve_plots:
        serve_plots(args.serve_plots, args.plot_period_ms)
        return 0
    exe = chromium_binary()
    if exe is None:
        print("bench_dashboard: Debian's chromium is needed (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {"plotting", "single", "concurrent", "open"}
    if unknown:
        p.error(f"--sections: unknown {sorted(unknown)}. Fix: use plotting, single, concurrent, open")
    result = {"machine": platform.node(), "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}
    runners = {"plotting": section_plotting, "single": section_single, "concurrent": section_concurrent,
               "open": section_open}
    with sync_playwright() as pw:
        # The browser is up before any server starts: start-up times are the server's, not Chromium's.
        # every tab stands for a user's foreground tab: no background-tab throttling of timers and rendering
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=[
            "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows"])
        try:
            for name in sections:
                t0 = time.perf_counter()
                result[name] = runners[name](args, browser)
                result[name]["seconds"] = round(time.perf_counter() - t0, 1)
                result[name]["load_average"] = os.getloadavg()
        finally:
            browser.close()
    rows = rows_of(result)
    width = max(len(r[0]) for r in rows) if rows else 0
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"load average at start {result['load_average_at_start']}, at end {os.getloadavg()}")
    print(f"wrote {write_results(result, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
