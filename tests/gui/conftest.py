"""Fixtures of the GUI tests: a small project with finished runs, and an authenticated client."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

TOKEN = "test-token-0123456789abcdef"
HEADERS = {"X-Cryoweave-Token": TOKEN, "X-Cryoweave-Request": "1"}


def make_project(root: Path) -> Path:
    """A project with an implicit import (``small:particles``) feeding ``small`` (Downsample)."""
    from cryoweave.demo.synthetic import write_particles
    from cryoweave.plugin import registry
    from cryoweave.workflow import run_protocol

    data = root / "data"
    data.mkdir(parents=True)
    star = write_particles(data, 60, 48, 1.5, np.random.default_rng(0))
    project, summary = run_protocol(root / "project", registry().get("Downsample"),
                                    {"particles": str(star), "box_px": 32}, label="small")
    project.close()
    assert summary.status == "finished", summary.error
    return root / "project"


@pytest.fixture(scope="module")
def gui_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("gui"))


@pytest.fixture
def client(gui_project: Path):
    from starlette.testclient import TestClient

    from cryoweave.gui import create_app

    app = create_app(gui_project, token=TOKEN, data_roots=[gui_project.parent / "data"],
                     poll_interval_s=0.05)
    with TestClient(app, headers=HEADERS) as test_client:
        yield test_client
    app.state.gui.project.close()


def wait_for_run(project_dir: Path, run_id: int, timeout_s: float = 60.0) -> str:
    """The final status of a run executed by a runner process."""
    from cryoweave.store import Project

    deadline = time.monotonic() + timeout_s
    with Project.open(project_dir) as project:
        while time.monotonic() < deadline:
            status = project.get_run(run_id).status
            if status not in ("saved", "running"):
                return status
            time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish in {timeout_s} s")
