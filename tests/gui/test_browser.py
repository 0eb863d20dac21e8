"""The GUI in a real browser: Playwright driving Debian's Chromium (never a downloaded one).

Each test starts ``cryoweave gui`` on a project made on the fly and waits for conditions
(no fixed sleeps). Screenshots of the main pages go to a temporary folder, or, to refresh the
ones in the README and the user guide, to the folder named by CRYOWEAVE_SCREENSHOTS
(``CRYOWEAVE_SCREENSHOTS=docs/images python -m pytest tests/gui/test_browser.py``; a relative
folder is taken from the repository root). A missing Chromium skips these tests, or fails them under
CRYOWEAVE_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, TESTS_DIR, cryoweave_command, missing_service, subprocess_env
from gui.conftest import make_project, wait_for_run

CHROMIUM = Path(os.environ.get("CRYOWEAVE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 "--disable-default-apps", "--disable-sync"]
SCREENSHOTS_ENV = "CRYOWEAVE_SCREENSHOTS"  # a folder: write the screenshots there
TIMEOUT_MS = 45_000


@pytest.fixture(scope="module")
def browser() -> Iterator:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        missing_service("the playwright package is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        missing_service(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    expect.set_options(timeout=TIMEOUT_MS)  # a loaded machine: wait generously, never sleep
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _env() -> dict[str, str]:
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(TESTS_DIR),
                                         os.environ.get("PYTHONPATH", "")])
    return env


class Served:
    """A ``cryoweave gui`` process and its URL (with the token)."""

    def __init__(self, project_dir: Path, data_roots: tuple[Path, ...] = ()):
        self.project_dir = project_dir
        roots = [arg for root in data_roots for arg in ("--data-root", str(root))]
        self.process = subprocess.Popen(
            cryoweave_command("gui", "--project", str(project_dir), "--no-browser", *roots),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
        for line in self.process.stdout:  # warnings may come first
            match = re.search(r"(http://\S+/)\?token=(\S+)", line)
            if match:
                break
        else:
            self.process.kill()
            raise AssertionError("cryoweave gui exited without printing its URL")
        self.base, self.token = match.groups()
        self.url = f"{self.base}?token={self.token}"
        self.output: list[str] = []  # drained, so that the server never blocks on the pipe
        threading.Thread(target=lambda: self.output.extend(self.process.stdout),
                         daemon=True).start()

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:  # not this test's concern: never leave it behind
            self.process.kill()
            self.process.wait(10)


def _page(browser, *, bypass_csp: bool) -> Iterator:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, bypass_csp=bypass_csp)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda msg: errors.append(msg.text)
           if msg.type == "error" and "Content Security Policy" in msg.text else None)
    yield tab
    context.close()
    assert not errors, f"errors in the page: {errors}"


# The tabs take `serve` so that pytest closes them before the servers they show: a tab whose
# server has already gone keeps polling it, and what it meets then is not the test's subject.
@pytest.fixture
def page(browser, serve):
    """A tab whose test may evaluate its own expressions (wait_for_function needs that)."""
    yield from _page(browser, bypass_csp=True)


@pytest.fixture
def strict_page(browser, serve):
    """A tab under the server's Content-Security-Policy, as a user's browser has it."""
    yield from _page(browser, bypass_csp=False)


@pytest.fixture
def serve():
    started: list[Served] = []

    def start(project_dir: Path, *data_roots: Path) -> Served:
        served = Served(project_dir, data_roots)
        started.append(served)
        return served

    yield start
    for served in started:
        served.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where the screenshots go: $CRYOWEAVE_SCREENSHOTS (e.g. docs/images, to refresh the
    documentation's pictures), else a temporary folder, so a test run leaves the tree clean."""
    chosen = os.environ.get(SCREENSHOTS_ENV)
    folder = (REPO_ROOT / chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _shot(page, folder: Path, name: str) -> None:
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(folder / name), full_page=False)
    assert (folder / name).stat().st_size > 0, name


def _status(page, expected: str) -> None:
    page.wait_for_selector(f'#run-status [data-status="{expected}"]', timeout=TIMEOUT_MS)


# -- a Downsample form filled, launched and watched live ---------------------------------------
def test_downsample_form_launched_and_watched_to_the_end(page, serve, tmp_path, screenshots):
    from playwright.sync_api import expect

    served = serve(make_project(tmp_path))
    page.goto(served.url)
    expect(page.locator('#runs-graph g.node[data-run="2"]')).to_have_attribute(
        "data-status", "finished")
    expect(page.locator("#runs-graph path.edge")).to_have_count(1)
    page.fill("#run-search", "downsample")
    expect(page.locator("#runs-table tbody tr")).to_have_count(1)
    expect(page.locator("#runs-graph g.node.match")).to_have_count(1)  # highlighted in the graph
    expect(page.locator('#runs-graph g.node.match[data-run="2"]')).to_have_count(1)
    _shot(page, screenshots, "gui-project.png")
    page.fill("#run-search", "")

    page.click('a[data-nav="new"]')
    page.click('a[data-protocol="Downsample"]')
    form = page.locator("#run-form")
    expect(form).to_be_visible()
    page.select_option('select[data-input="particles"]',
                       label="#2 small Downsample: particles (60 items, closed)")
    page.click('.tab[data-tab="Target"]')
    page.fill('input[name="box_px"]', "33")
    page.click('.tab[data-tab="Launch"]')
    page.fill('input[name="_label"]', "live")
    page.click("#launch")  # refused by the server's validator: shown next to the field
    error = page.locator('.field[data-field="box_px"] .error')
    expect(error).to_contain_text("must be even")
    expect(page.locator('.field[data-field="box_px"]')).to_be_visible()
    expect(page.locator('.tab[data-tab="Target"]')).to_have_class(re.compile("has-error"))
    _shot(page, screenshots, "gui-form.png")
    page.fill('input[name="box_px"]', "24")
    page.click("#launch")
    page.wait_for_url(re.compile(r"#/run/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    _status(page, "finished")  # no reload: the event stream refreshed the page
    expect(page.locator("#run-steps")).to_contain_text("done")
    expect(page.locator("#run-log")).to_contain_text("finished")
    expect(page.locator("#run-summary")).to_contain_text("box_px")
    # parameters under their human titles and units, the name as a tooltip
    expect(page.locator("#run-params")).to_contain_text("Box size (px)")
    expect(page.locator('#run-params th[title="box_px"]')).to_have_count(1)
    # results: the output's pictures from the viewers (simulated particles have poses)
    expect(page.locator("#run-results img")).to_have_count(2)
    expect(page.locator('#run-results img[alt="live_particles_angular_distribution.png"]')) \
        .to_have_count(1)
    page.wait_for_function("[...document.querySelectorAll('#run-results img')]"
                           ".every(i => i.naturalWidth > 0)")
    _shot(page, screenshots, "gui-run.png")
    page.click("#run-outputs a[data-set]")
    expect(page.locator("#set-info")).to_contain_text("60 items")
    expect(page.locator("#items tbody tr")).to_have_count(60)
    page.click('th[data-column="defocus_u_a"]')
    page.click('th[data-column="defocus_u_a"]')  # descending
    expect(page.locator('th[data-column="defocus_u_a"]')).to_have_class(re.compile("sorted-desc"))
    expect(page.locator("#set-pictures img")).to_have_count(2)  # angular distribution, gallery
    page.wait_for_function("document.querySelector('#set-pictures img').naturalWidth > 0")
    page.wait_for_function("document.querySelector('#items img.thumb').naturalWidth > 0")
    _shot(page, screenshots, "gui-set.png")
    assert wait_for_run(served.project_dir, run_id) == "finished"

    page.goto(served.url + f"#/run/{run_id}")
    page.click("#run-copy")  # the form pre-filled with the run's parameters
    expect(page.locator("#run-form")).to_contain_text("copy of #3 live")
    page.click('.tab[data-tab="Target"]')
    expect(page.locator('input[name="box_px"]')).to_have_value("24")
    expect(page.locator('select[data-input="particles"]')).to_have_value(
        json.dumps({"run": 2, "output": "particles"}, separators=(",", ":")))
    page.goto(served.url + "#/run/2")
    messages = []
    page.once("dialog", lambda dialog: (messages.append(dialog.message), dialog.dismiss()))
    page.click("#run-delete")  # dismissed: the runs using its outputs are named first
    assert messages and "#3" in messages[0]
    _status(page, "finished")


# -- visible_if -----------------------------------------------------------------------------------
def test_form_hides_and_shows_fields_as_declared(strict_page, serve, tmp_path):
    from playwright.sync_api import expect

    page = strict_page  # the app works under its own Content-Security-Policy
    served = serve(make_project(tmp_path))
    page.goto(served.url + "#/new/ImportMicrographs")
    page.click('.tab[data-tab="Streaming"]')
    timeout = page.locator('.field[data-field="timeout_s"]')
    settle = page.locator('.field[data-field="file_settle_s"]')
    expect(timeout).to_be_hidden()
    page.check('input[name="streaming"]')
    expect(timeout).to_be_visible()
    expect(settle).to_be_hidden()  # expert
    page.check("#expert-toggle")
    expect(settle).to_be_visible()
    expect(timeout.locator(".unit")).to_have_text("(s)")
    page.uncheck('input[name="streaming"]')
    expect(timeout).to_be_hidden()
    expect(settle).to_be_hidden()


# -- a run killed with SIGKILL, shown failed, continued from the GUI -------------------------------
def test_killed_run_is_shown_failed_and_continued_from_the_gui(page, serve, tmp_path):
    from playwright.sync_api import expect

    project_dir = make_project(tmp_path)
    served = serve(project_dir)
    params = tmp_path / "slow.json"
    # 60 chained steps of 0.2 s: still running when the page has shown the first ones
    params.write_text(json.dumps({"n_steps": 60, "sleep_s": 0.2, "chain": True}))
    runner = subprocess.Popen(  # started from the command line: the GUI sees it live
        cryoweave_command("run-protocol", "ToySteps", str(params), "--project",
                          str(project_dir), "--label", "slow", "--quiet"),
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    page.goto(served.url)
    node = page.locator('#runs-graph g.node[data-run="3"]')
    expect(node).to_have_attribute("data-status", "running")
    page.goto(served.url + "#/run/3")
    expect(page.locator("#run-steps")).to_contain_text("done")
    runner.send_signal(signal.SIGKILL)
    runner.wait(10)
    _status(page, "failed (process gone)")
    expect(page.locator("#run-continue")).to_be_enabled()
    page.click("#run-continue")
    _status(page, "finished")
    expect(page.locator("#run-steps")).to_have_text("60 done")
    assert wait_for_run(project_dir, 3) == "finished"


# -- a streaming import + preprocessing with items arriving while the page is open --------------
def _write_micrograph(folder: Path, index: int) -> None:
    from cryoweave.formats import write_mrc

    rng = np.random.default_rng(index)
    tmp = folder / f".part_{index}"
    write_mrc(tmp, rng.normal(100.0, 5.0, (128, 128)).astype(np.float32), 1.0)
    tmp.rename(folder / f"mic_{index:03d}.mrc")


def test_streaming_workflow_monitored_then_stopped(page, serve, tmp_path, screenshots):
    from playwright.sync_api import expect

    project_dir = make_project(tmp_path)
    movies = tmp_path / "Movies"
    movies.mkdir()
    for index in range(2):
        _write_micrograph(movies, index)
    served = serve(project_dir, movies)  # the microscope's folder: a data root
    workflow = {"protocols": [
        {"label": "import", "protocol": "ImportMicrographs",
         "params": {"pattern": str(movies / "*.mrc"), "streaming": True, "pixel_size_a": 1.0,
                    "timeout_s": 120, "file_settle_s": 0.2}},
        {"label": "preprocess", "protocol": "PreprocessMicrographs",
         "params": {"micrographs": {"run": "import", "output": "micrographs"},
                    "do_normalize": True, "batch_size": 2}}]}
    page.goto(served.url + "#/workflows")
    page.fill("#workflow-text", json.dumps(workflow, indent=1))
    page.click("#workflow-load")
    page.wait_for_selector("#workflow-result > *")
    assert page.locator("#workflow-result a").count() == 2, \
        page.locator("#workflow-result").inner_text()
    page.goto(served.url + "#/streaming")
    rows = page.locator("#open-sets tbody tr")
    count = page.locator('#open-sets tbody tr:first-child td.count')
    expect(count).to_have_text("2")
    for index in range(2, 6):  # the session goes on while the page is open
        _write_micrograph(movies, index)
    expect(count).to_have_text("6")
    expect(rows).to_have_count(2)  # the import's and the preprocessing's outputs
    expect(page.locator("#open-sets tbody tr:nth-child(2) td.count")).to_have_text("6")
    _shot(page, screenshots, "gui-streaming.png")
    page.locator('#stream-runs tr[data-run="3"] button.stop').click()
    expect(page.locator("#stream-runs tbody tr")).to_have_count(0)
    expect(rows).to_have_count(0)
    assert wait_for_run(project_dir, 3) == "finished"
    assert wait_for_run(project_dir, 4) == "finished"
    page.goto(served.url + "#/run/4")  # the preprocessed micrographs: contact sheet, spectra
    page.click("#run-outputs a[data-set]")
    expect(page.locator("#set-info")).to_contain_text("6 items · closed")
    pictures = page.locator("#set-pictures img")
    expect(pictures.first).to_be_visible()
    names = [pictures.nth(i).get_attribute("alt") for i in range(pictures.count())]
    assert "preprocess_micrographs_contact_sheet.png" in names, names
    assert "preprocess_micrographs_power_spectra.png" in names, names
    expect(page.locator("#items img.thumb")).to_have_count(6)
    _shot(page, screenshots, "gui-micrographs.png")


# -- an answer that is not the API's own (a crash, a proxy) ---------------------------------------
def test_a_run_page_is_redrawn_only_when_its_run_changes(page, serve, tmp_path):
    """Every change in the project used to redraw an open run page: a click pressed on a link
    and released on its redrawn copy was lost (CI: the output link of a finished run did
    nothing). A run started elsewhere leaves the page's elements in place; a run that uses
    this run's output is shown under "Used by"."""
    from playwright.sync_api import expect

    from cryoweave.plugin import registry
    from cryoweave.workflow import run_protocol

    project_dir = make_project(tmp_path)
    served = serve(project_dir)
    page.goto(served.url + "#/run/2")
    link = page.locator("#run-outputs a[data-set]").first
    expect(link).to_be_visible()
    handle = link.element_handle()

    def refreshes() -> int:
        return int(page.get_attribute("#run-page", "data-refreshes") or 0)

    def changed_elsewhere(source: dict, label: str) -> None:
        before = refreshes()
        run_protocol(project_dir, registry().get("Downsample"),
                     {"particles": source, "box_px": 24}, label=label)
        page.wait_for_function(
            f"Number(document.querySelector('#run-page').dataset.refreshes) > {before}",
            timeout=TIMEOUT_MS)

    changed_elsewhere({"run": 1, "output": "particles"}, "elsewhere")  # not about run 2
    assert handle.evaluate("e => e.isConnected")
    link.click()
    expect(page.locator("#set-info")).to_contain_text("60 items · closed")
    page.go_back()
    expect(page.locator("#run-outputs a[data-set]")).to_be_visible()
    changed_elsewhere({"run": 2, "output": "particles"}, "after")  # uses run 2's output
    expect(page.locator("#run-page")).to_contain_text("#4")


def test_the_project_page_redraws_only_what_changed(page, serve, tmp_path):
    """The project page redrew its whole list (and graph) on every change in the project, so a
    click pressed on a run's link could be released on its redrawn copy and lost, as on the run
    page. A new run adds its row and node; the other rows stay the same elements."""
    from playwright.sync_api import expect

    from cryoweave.plugin import registry
    from cryoweave.workflow import run_protocol

    project_dir = make_project(tmp_path)
    served = serve(project_dir)
    page.goto(served.url + "#/")
    rows = page.locator("#runs-table tbody tr")
    expect(rows).to_have_count(2)
    link = page.locator('#runs-table tr[data-run="2"] a[href="#/run/2"]')
    handle = link.element_handle()
    run_protocol(project_dir, registry().get("Downsample"),
                 {"particles": {"run": 2, "output": "particles"}, "box_px": 24}, label="later")
    expect(rows).to_have_count(3)  # the page has been refreshed
    expect(page.locator('#runs-graph g.node[data-run="3"]')).to_have_count(1)
    expect(page.locator('#runs-graph path.edge[data-edge="2-3"]')).to_have_count(1)
    assert handle.evaluate("e => e.isConnected")  # run 2's row was not redrawn
    assert rows.last.get_attribute("data-run") == "3"
    link.click()
    expect(page.locator("#run-page")).to_contain_text("Downsample")


def test_an_answer_that_is_not_json_is_shown_not_thrown(page, serve, tmp_path):
    """A plain-text 500 (or no answer) used to throw "Cannot read properties of null" in the
    page; it is shown where the result would be, and the page keeps working."""
    from playwright.sync_api import expect

    served = serve(make_project(tmp_path))
    page.route("**/api/runs/2/pictures*", lambda route: route.fulfill(
        status=500, body="Internal Server Error", content_type="text/plain"))
    page.goto(served.url + "#/run/2")
    expect(page.locator("#run-results")).to_contain_text("500 Internal Server Error")
    page.route("**/api/runs/2", lambda route: route.abort())  # the server stopped answering
    page.goto(served.url + "#/run/1")
    page.goto(served.url + "#/run/2")
    expect(page.locator("#run-page")).to_contain_text("the server did not answer")
    # the `page` fixture fails the test on any error thrown in the page
