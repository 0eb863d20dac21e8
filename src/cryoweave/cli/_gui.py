"""``cryoweave gui``: serve the web GUI of a project."""

from __future__ import annotations

import contextlib

import click

from cryoweave.cli._common import db_option, out, project_option
from cryoweave.errors import ParamError


@click.command()
@project_option
@db_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; beyond loopback, share the URL (it holds the "
                   "token) only with the people who may use the project.")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0: a free one).")
@click.option("--no-browser", is_flag=True, help="Do not open a web browser.")
@click.option("--token", default=None, metavar="TEXT",
              help="The access token (default: a random one, printed in the URL).")
@click.option("--data-root", "data_roots", multiple=True, type=click.Path(file_okay=False),
              help="A folder the file chooser may show (repeatable); the configured "
                   "data_roots are added.")
def gui(project_dir: str, db_url: str | None, host: str, port: int, no_browser: bool,
        token: str | None, data_roots: tuple[str, ...]) -> None:
    """Serve the web GUI of a project (runs graph, forms, results, streaming monitor).

    Runs it starts are ordinary runner processes: they go on when the GUI stops.
    """
    import socket

    import uvicorn

    from cryoweave.gui import create_app, is_loopback, new_token

    if token is not None and len(token) < 16:
        raise ParamError("--token: use at least 16 characters")
    token = token or new_token()  # loopback too: other users of this machine can reach it
    app = create_app(project_dir, token=token, data_roots=list(data_roots), db_url=db_url)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)  # connections wait in the backlog until the server accepts them
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound_port}/?token={token}"
    out.print(f"cryoweave GUI of {app.state.gui.project.root} at {url}", soft_wrap=True)
    if not is_loopback(host):
        out.print(f"listening on {host}: anyone who can reach it needs the token; the traffic "
                  "is not encrypted (put it behind HTTPS or an SSH tunnel on other networks)",
                  soft_wrap=True)
    if not no_browser:
        import webbrowser  # here: only the GUI command opens a browser

        webbrowser.open(url)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C or SIGTERM, after the shutdown
        uvicorn.Server(config).run(sockets=[sock])
    out.print("cryoweave GUI stopped (runs it started go on)")
