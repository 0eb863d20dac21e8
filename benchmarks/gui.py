"""The web GUI on a large project: 200 runs in a lineage graph and a 1,000,000-particle set.

Measures (goals of issue 11): the project page rendered in a browser (< 1 s; Playwright with
Debian's Chromium, skipped without it) and its two API calls; a 100-row page of the particle
table (< 200 ms) in item order and sorted by a typed column; the CPU the event stream adds
to an idle machine (< 5 %: the server process's CPU time while one browser-like client
listens, over ``idle_s``).

    python benchmarks/gui.py [--runs 200] [--n 1000000] [--idle-s 20]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import Section  # noqa: E402

from cryoweave.store import ParticleSet, Project  # noqa: E402
from cryoweave.store.schema import Run, SetRow  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def make_project(root: Path, runs: int, n: int) -> Path:
    """``runs`` finished runs in chains of 10 linked by data; the first holds ``n`` particles."""
    project = Project.create(root)
    rng = np.random.default_rng(0)
    with project.transaction() as s:
        previous_set = None
        for index in range(runs):
            run = Run(label=f"run-{index:03d}", protocol="cryoweave:Downsample",
                      status="finished", folder=f"Runs/{index + 1:06d}_Downsample",
                      started_at=time.time() - 60, finished_at=time.time() - 30,
                      params={"box_px": 64} if index % 10 == 0 or previous_set is None else
                      {"particles": {"run": f"run-{index - 1:03d}", "output": "particles",
                                     "set": previous_set}, "box_px": 64})
            s.add(run)
            s.flush()
            row = SetRow(run_id=run.id, name="particles", kind="particles", state="closed",
                         version=1, properties={})
            s.add(row)
            s.flush()
            previous_set = row.id
    particles = ParticleSet(project, 1)
    batch = 200_000
    for start in range(0, n, batch):
        count = min(batch, n - start)
        particles.append(pd.DataFrame({
            "item_id": np.arange(start + 1, start + count + 1),
            "image_path": ["Runs/000001_Downsample/extra/particles.mrcs"] * count,
            "image_index": np.arange(count),
            "defocus_u_a": rng.uniform(5000, 30000, count),
            "defocus_v_a": rng.uniform(5000, 30000, count),
            "rot_deg": rng.uniform(-180, 180, count),
            "half": rng.integers(1, 3, count)}))
    project.close()
    return root


def _serve(project_dir: Path) -> tuple[subprocess.Popen, str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "cryoweave.cli", "gui", "--project",
                                str(project_dir), "--no-browser"], stdout=subprocess.PIPE,
                               text=True, env=env)
    base, token = re.search(r"(http://\S+/)\?token=(\S+)", process.stdout.readline()).groups()
    return process, base, token


def _best_ms(client: httpx.Client, url: str, repeats: int = 5) -> float:
    client.get(url).raise_for_status()  # warm the caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        client.get(url).raise_for_status()
        times.append(time.perf_counter() - started)
    return 1000 * min(times)


def _browser_render_s(url: str, runs: int) -> float | None:
    if not Path(CHROMIUM).exists():
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"])
        page = browser.new_page(bypass_csp=True)  # wait_for_function evaluates strings
        page.goto(url)  # first load: static files cached
        page.wait_for_function(f"document.querySelectorAll('#runs-table tbody tr').length"
                               f" === {runs}")
        times = []
        for _ in range(3):
            started = time.perf_counter()
            page.reload()
            page.wait_for_function(
                f"document.querySelectorAll('#runs-graph g.node').length === {runs} && "
                f"document.querySelectorAll('#runs-table tbody tr').length === {runs}")
            times.append(time.perf_counter() - started)
        browser.close()
    return min(times)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _idle_cpu_pct(pid: int, base: str, headers: dict[str, str], listeners: int,
                  idle_s: float) -> float:
    """The server's CPU (% of one core) while ``listeners`` clients hold the event stream."""
    def listen() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=idle_s + 30) as client, \
                client.stream("GET", f"api/events?max_s={idle_s}") as stream:
            for _ in stream.iter_bytes():
                pass

    cpu_before = _cpu_s(pid)
    wall = time.perf_counter()
    threads = [threading.Thread(target=listen) for _ in range(listeners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - wall
    return 100 * (_cpu_s(pid) - cpu_before) / wall


def measure(runs: int, n: int, idle_s: float) -> dict[str, float | None]:
    with tempfile.TemporaryDirectory(prefix="cw-bench-gui-") as tmp:
        started = time.perf_counter()
        project_dir = make_project(Path(tmp) / "project", runs, n)
        build_s = time.perf_counter() - started
        process, base, token = _serve(project_dir)
        try:
            headers = {"X-Cryoweave-Token": token}
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        client.get("api/project").raise_for_status()
                        break
                    except httpx.ConnectError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
                result: dict[str, float | None] = {
                    "build_s": build_s,
                    "graph_ms": _best_ms(client, "api/graph"),
                    "runs_ms": _best_ms(client, "api/runs"),
                    "page_first_ms": _best_ms(client, "api/sets/1/items?limit=100"),
                    "page_last_ms": _best_ms(
                        client, f"api/sets/1/items?limit=100&offset={n - 100}"),
                }
                # the first sorted request creates the column's index (once per column)
                started = time.perf_counter()
                client.get("api/sets/1/items?limit=100&sort=defocus_u_a&desc=1") \
                    .raise_for_status()
                result["page_sorted_first_ms"] = 1000 * (time.perf_counter() - started)
                result["page_sorted_ms"] = _best_ms(
                    client, "api/sets/1/items?limit=100&sort=defocus_u_a&desc=1")
                result["page_sorted_middle_ms"] = _best_ms(
                    client, f"api/sets/1/items?limit=100&sort=defocus_u_a&offset={n // 2}")
                result["render_s"] = _browser_render_s(f"{base}?token={token}", runs)
                # idle: pages listen to the event stream, nothing changes
                for listeners in (1, 10):
                    result[f"sse_cpu_pct_{listeners}"] = _idle_cpu_pct(
                        process.pid, base, headers, listeners, idle_s)
        finally:
            process.terminate()
            process.wait(10)
    return result


def run(runs: int = 200, n: int = 1_000_000, idle_s: float = 20.0) -> Section:
    r = measure(runs, n, idle_s)
    section = Section(
        f"Web GUI: {runs} runs and a {n:,}-particle set",
        f"A project of {runs} finished runs in lineage chains of 10 and one set of {n:,} "
        "particles (SQLite), served by `cryoweave gui`; HTTP timings are the best of 5 "
        "requests after a warm-up, the page render the best of 3 reloads in Chromium "
        "(Playwright) until every graph box and list row is drawn; CPU in % of one core.",
        ["measurement", "value", "goal"])
    if r["render_s"] is not None:
        section.rows.append(["project page rendered in the browser (graph + list)",
                             f"{r['render_s']:.2f} s", "< 1 s"])
    section.rows += [
        ["GET /api/graph (runs + lineage edges)", f"{r['graph_ms']:.0f} ms", ""],
        ["GET /api/runs (list)", f"{r['runs_ms']:.0f} ms", ""],
        ["100-row page of the particle table, first page", f"{r['page_first_ms']:.0f} ms",
         "< 200 ms"],
        ["100-row page, last page (offset n − 100)", f"{r['page_last_ms']:.0f} ms",
         "< 200 ms"],
        ["first page sorted by a new column (creates its index, once per column)",
         f"{r['page_sorted_first_ms']:.0f} ms", ""],
        ["100-row page sorted by defocus_u_a (descending)", f"{r['page_sorted_ms']:.0f} ms",
         "< 200 ms"],
        ["100-row page sorted by defocus_u_a, middle page (offset n / 2)",
         f"{r['page_sorted_middle_ms']:.0f} ms", "< 200 ms"],
        [f"event stream, idle: server CPU while 1 page listens ({idle_s:.0f} s)",
         f"{r['sse_cpu_pct_1']:.2f} %", "< 5 %"],
        [f"event stream, idle: server CPU while 10 pages listen ({idle_s:.0f} s)",
         f"{r['sse_cpu_pct_10']:.2f} %", "< 5 %"],
    ]
    section.notes.append(f"building the project took {r['build_s']:.0f} s (not timed above)")
    section.notes.append("item order uses the (set_id, item_id) primary key; the first page "
                         "sorted by a column creates an index (set_id, column, item_id) "
                         "(`CREATE INDEX IF NOT EXISTS`, also on existing projects), later "
                         "sorted pages read it")
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--idle-s", type=float, default=20.0)
    args = parser.parse_args()
    print(run(args.runs, args.n, args.idle_s).markdown())


if __name__ == "__main__":
    main()
