"""Dashboard benchmark: start-up time, live UI update rate with 1024 walkers, server memory over a session.

Runs ``latentlab serve`` in a subprocess and drives it with headless Chromium
(Debian's package, through Playwright's Python client), as a person would:

1. **start-up**: seconds from launching the server to (a) the URL being
   printed, (b) the page being interactive (NGL has drawn the molecule and a
   tab click responds);
2. **UI updates/s**: with ``--walkers`` (default 1024) walkers simulating,
   the browser counts how often the model histogram it shows changes (polled
   every 40 ms, so rates up to ~25/s are resolved);
3. **memory**: the server's resident memory (``/proc/PID/status`` VmRSS)
   every ``--sample`` seconds over ``--minutes`` (default 10) of continuous
   simulation with the page open; reported as first/last/max and the slope
   after the first minute.

The model: the exact PMF for the analytic systems, otherwise a short
training run started from the page (``--epochs``).  Prints a table and
writes JSON (default ``benchmarks/results/bench_dashboard.json``)::

    python benchmarks/bench_dashboard.py [--data three-atom] [--minutes 10] [--walkers 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANALYTIC = ("three-atom", "double-well", "gaussian-mixture")


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
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def start_server(data: str):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "latentlab.cli", "serve", "--port", str(port), "--data", data],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while True:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError("latentlab serve exited before printing its URL")
        m = re.search(r"latentlab dashboard: (http://\S+)", line)
        if m:
            return proc, m.group(1), t0, time.perf_counter() - t0


COUNT_UPDATES = """(seconds) => new Promise((resolve) => {
  const value = () => { let s = 0; for (const doc of Bokeh.documents) for (const m of doc.all_models)
      if (m.data && m.data.model !== undefined) for (const v of m.data.model) s += v; return s; };
  let last = value(), changes = 0;
  const t0 = performance.now();
  const timer = setInterval(() => {
    const v = value();
    if (v !== last) { changes += 1; last = v; }
    if (performance.now() - t0 > seconds * 1000) { clearInterval(timer); resolve(changes / seconds); }
  }, 40);
})"""


def tab(page, name):
    page.locator(".bk-tab").filter(has_text=re.compile(f"^{re.escape(name)}$")).first.click()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="three-atom", help="data set to serve (default three-atom: exact PMF, no training)")
    p.add_argument("--walkers", type=int, default=1024)
    p.add_argument("--minutes", type=float, default=10.0, help="length of the memory session (default 10)")
    p.add_argument("--sample", type=float, default=15.0, help="seconds between memory samples")
    p.add_argument("--rate-seconds", type=float, default=10.0, help="window for the UI update rate")
    p.add_argument("--epochs", type=int, default=5, help="training epochs when the data set has no exact PMF")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "bench_dashboard.json"))
    args = p.parse_args(argv)

    exe = chromium_binary()
    if exe is None:
        print("bench_dashboard: Debian's chromium is needed (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # The browser is up before the server starts: the start-up time is the server's, not Chromium's.
        browser = pw.chromium.launch(executable_path=exe, headless=True)
        proc, url, t_launch, t_url = start_server(args.data)
        result = {"data": args.data, "walkers": args.walkers, "machine": platform.node(), "cpus": os.cpu_count(),
                  "load_average_at_start": os.getloadavg()[0], "url_printed_s": round(t_url, 2)}
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_selector("div.latentlab-ngl[data-ready]", timeout=60000)
            tab(page, "Train")
            page.get_by_text(re.compile("CUDA:")).first.wait_for(timeout=10000)
            result["interactive_s"] = round(time.perf_counter() - t_launch, 2)

            if args.data in ANALYTIC:
                page.get_by_role("button", name="Use exact PMF").click()
                page.get_by_text(re.compile("exact PMF of")).first.wait_for(timeout=20000)
            else:
                box = page.get_by_label("Epochs")
                box.first.fill(str(args.epochs))
                box.first.press("Enter")
                t = time.perf_counter()
                page.get_by_role("button", name="Train", exact=True).click()
                page.get_by_text(re.compile(r"(finished|stopped) after")).first.wait_for(timeout=1800000)
                result["training_s"] = round(time.perf_counter() - t, 1)
            tab(page, "Simulate")
            walkers = page.get_by_label("N walkers")
            walkers.first.fill(str(args.walkers))
            walkers.first.press("Enter")
            page.wait_for_timeout(500)
            page.get_by_role("button", name="Simulate", exact=True).click()
            page.get_by_text(re.compile(r"running.*samples")).first.wait_for(timeout=60000)
            page.wait_for_timeout(2000)
            result["ui_updates_per_s"] = round(page.evaluate(COUNT_UPDATES, args.rate_seconds), 2)
            text = page.get_by_text(re.compile(r"steps/s")).first.inner_text()
            m = re.search(r"(\d+) steps/s", text)
            result["sampler_steps_per_s"] = int(m.group(1)) if m else None

            samples = []
            t0 = time.perf_counter()
            end = t0 + 60.0 * args.minutes
            while True:
                samples.append((round(time.perf_counter() - t0, 1), round(rss_mb(proc.pid), 1)))
                if time.perf_counter() >= end:
                    break
                page.wait_for_timeout(int(1000 * min(args.sample, max(0.1, end - time.perf_counter()))))
            page.screenshot(path=os.path.join(ROOT, "benchmarks", "results", "bench_dashboard.png"))
            result["ui_updates_per_s_end"] = round(page.evaluate(COUNT_UPDATES, min(5.0, args.rate_seconds)), 2)
            page.get_by_role("button", name="Pause").click()
            result["page_errors"] = errors
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            browser.close()

    mem = [m for _, m in samples]
    late = [(t, m) for t, m in samples if t >= 60.0]
    slope = None
    if len(late) >= 2:
        import numpy as np

        tt, mm = np.array(late).T
        slope = float(np.polyfit(tt / 60.0, mm, 1)[0])
    result["memory_mb"] = {"first": mem[0], "last": mem[-1], "max": max(mem),
                           "slope_mb_per_min_after_1min": None if slope is None else round(slope, 2),
                           "minutes": args.minutes, "samples": samples}
    rows = [("server start -> URL printed (s)", result["url_printed_s"]),
            ("server start -> interactive page (s)", result["interactive_s"]),
            (f"UI updates/s, {args.walkers} walkers (start)", result["ui_updates_per_s"]),
            (f"UI updates/s, {args.walkers} walkers (end)", result["ui_updates_per_s_end"]),
            ("sampler steps/s", result["sampler_steps_per_s"]),
            (f"server RSS MB first / last / max over {args.minutes:g} min",
             f"{mem[0]:.0f} / {mem[-1]:.0f} / {max(mem):.0f}"),
            ("RSS slope after 1 min (MB/min)", result["memory_mb"]["slope_mb_per_min_after_1min"])]
    if "training_s" in result:
        rows.insert(2, ("training (s)", result["training_s"]))
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
