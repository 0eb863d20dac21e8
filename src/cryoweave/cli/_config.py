"""``cryoweave config``: show the effective configuration, check a queue."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cryoweave.cli._common import project_option


@click.group()
def config() -> None:
    """The site and project configuration (queues, data roots, device, engine threads)."""


@config.command("show")
@project_option
@click.option("--json", "as_json", is_flag=True, help="Print the configuration as JSON.")
def config_show(project_dir: str, as_json: bool) -> None:
    """Print the effective configuration and where each value came from."""
    from cryoweave.workflow import describe_config, load_config

    loaded = load_config(Path(project_dir))
    if as_json:
        click.echo(json.dumps({"config": loaded.config.model_dump(mode="json"),
                               "sources": loaded.sources}, indent=2))
        return
    click.echo(describe_config(loaded), nl=False)


@config.command("check-queue")
@click.argument("name")
@project_option
@click.option("--gpu", is_flag=True, help="Ask for a worker with a GPU.")
@click.option("--timeout", "timeout_s", default=300.0, show_default=True,
              help="Seconds to wait for the test job.")
def config_check_queue(name: str, project_dir: str, gpu: bool, timeout_s: float) -> None:
    """Submit a trivial job to queue NAME and report where it ran."""
    from cryoweave.workflow import check_queue, load_config

    root = Path(project_dir).resolve()
    queue_name, queue = load_config(root).config.queue(name)
    click.echo(f"queue {queue_name!r} ({queue.kind}): submitting a test job …")
    report = check_queue(queue_name, queue, root / "Cache" / "check-queue", gpu=gpu,
                         timeout_s=timeout_s)
    click.echo(f"ok: ran on {report['host']} (pid {report['pid']}) in {report['seconds']} s; "
              f"threads {report['threads']}; CUDA_VISIBLE_DEVICES="
              f"{report['cuda_visible_devices']}; project folder visible: "
              f"{report['sees_folder']}")
