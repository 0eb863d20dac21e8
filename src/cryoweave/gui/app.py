"""The Starlette application of the web GUI: pages, static files, the API and the event stream."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cryoweave.gui._api import ROUTES, GuiState
from cryoweave.gui._events import ChangeWatcher
from cryoweave.gui._files import FileBrowser
from cryoweave.gui._security import TOKEN_COOKIE, SecurityMiddleware
from cryoweave.store import Project

STATIC_DIR = Path(__file__).parent / "static"


def _index(request: Request) -> HTMLResponse:
    response = HTMLResponse((STATIC_DIR / "index.html").read_text(),
                            headers={"cache-control": "no-store"})
    token = request.app.state.token
    if token is not None:
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
    return response


def create_app(project_dir: str | Path, *, token: str | None = None,
               data_roots: list[str | Path] | None = None, db_url: str | None = None,
               poll_interval_s: float = 1.0) -> Starlette:
    """The GUI for the project at ``project_dir``.

    ``token``: required on every request when given (see :mod:`cryoweave.gui._security`).
    ``data_roots``: folders the file chooser may show besides the project; the configured
    ``data_roots`` are added.
    """
    from cryoweave.workflow import load_config

    project = Project.open(project_dir, db_url)
    roots: list[Path] = [project.root]
    roots += [Path(r) for r in data_roots or []]
    roots += [Path(r) for r in load_config(project.root).config.data_roots]
    app = Starlette(routes=[
        Route("/", _index),
        *ROUTES,
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ])
    app.state.gui = GuiState(project, FileBrowser(roots), poll_interval_s=poll_interval_s)
    app.state.watcher = ChangeWatcher(project, poll_interval_s)
    app.state.token = token
    app.add_middleware(SecurityMiddleware, token=token)
    return app
