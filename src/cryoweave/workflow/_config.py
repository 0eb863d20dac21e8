"""The site and project configuration: queues, data roots, default device, engine threads.

Read from YAML files, later ones overriding earlier ones key by key (a queue is replaced
whole, by name):

1. built-in defaults (one ``local`` queue);
2. the user's file, ``$XDG_CONFIG_HOME/cryoweave/config.yaml`` (``~/.config/…``);
3. the file named by ``$CRYOWEAVE_CONFIG`` (a site file);
4. the project's ``cryoweave.yaml``;
5. the ``CRYOWEAVE_*`` environment variables (``CRYOWEAVE_DEVICE``, ``CRYOWEAVE_FFT_WORKERS``,
   ``CRYOWEAVE_QUEUE``, ``CRYOWEAVE_DASK_SCHEDULER``, ``CRYOWEAVE_ALLOW_POST_SCRIPT=1``).

Every value remembers where it came from (``cryoweave config show``). Everything is validated
before a run is created.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cryoweave.errors import ParamError

PROJECT_CONFIG = "cryoweave.yaml"
CONFIG_ENV_VAR = "CRYOWEAVE_CONFIG"
POST_SCRIPT_ENV = "CRYOWEAVE_ALLOW_POST_SCRIPT"
JOBQUEUE_KINDS = ("slurm", "pbs", "sge")


class QueueConfig(BaseModel):
    """One named queue: where the steps of a run are computed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local", "dask", "slurm", "pbs", "sge"]
    description: str = ""
    # local
    devices: list[str] = Field(default_factory=list,
                               description="local: GPU ids shared out one per concurrent step")
    # dask
    address: str | None = Field(None, description="dask: scheduler address tcp://host:8786")
    # slurm | pbs | sge (dask-jobqueue)
    partition: str | None = Field(None, description="Slurm partition, PBS/SGE queue")
    account: str | None = None
    walltime: str | None = Field(None, description="HH:MM:SS per worker job")
    cores: int = Field(1, gt=0, description="cores per worker job")
    memory: str = Field("4GB", description="memory per worker job, e.g. 16GB")
    gpus: int = Field(0, ge=0, description="GPUs per worker job (the scheduler's gres)")
    max_jobs: int = Field(1, gt=0, description="worker jobs at most at the same time")
    prologue: list[str] = Field(default_factory=list,
                                description="job-script lines before the worker starts")
    directives: list[str] = Field(default_factory=list,
                                  description="extra scheduler directives (#SBATCH …)")
    python: str | None = Field(None, description="the worker's Python (default: this one)")
    scheduler_host: str | None = Field(
        None, description="address the run's scheduler listens on (reachable from the jobs)")

    @model_validator(mode="after")
    def _settings_fit_the_kind(self) -> QueueConfig:
        if self.kind == "dask" and not self.address:
            raise ValueError("a dask queue needs an 'address' (tcp://host:8786)")
        if self.kind != "dask" and self.address:
            raise ValueError(f"'address' is for dask queues, not {self.kind}")
        if self.kind != "local" and self.devices:
            raise ValueError(f"'devices' is for local queues, not {self.kind}")
        return self

    @field_validator("memory")
    @classmethod
    def _memory_has_a_unit(cls, value: str) -> str:
        try:
            parse_memory_gb(value)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def memory_gb(self) -> float:
        return parse_memory_gb(self.memory)


def parse_memory_gb(text: str) -> float:
    """``"16GB"``, ``"512MB"``, ``"2GiB"`` → GB (decimal)."""
    units = {"kb": 1e-6, "mb": 1e-3, "gb": 1.0, "tb": 1e3,
             "kib": 1024 / 1e9, "mib": 1024**2 / 1e9, "gib": 1024**3 / 1e9, "tib": 1024**4 / 1e9}
    value = text.strip().lower().replace(" ", "")
    for unit in sorted(units, key=len, reverse=True):
        if value.endswith(unit):
            number = value[: -len(unit)]
            try:
                return float(number) * units[unit]
            except ValueError:
                break
    raise ValueError(f"memory {text!r} is not a size such as '16GB' or '512MB'")


class Config(BaseModel):
    """The effective configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queues: dict[str, QueueConfig] = Field(
        default_factory=lambda: {"local": QueueConfig(kind="local")})
    default_queue: str = "local"
    data_roots: list[Path] = Field(default_factory=list,
                                   description="folders the GUI's file chooser offers")
    device: Literal["auto", "cpu", "gpu"] = "auto"
    engine_threads: int | None = Field(None, gt=0, description="engine (FFT) threads per step")
    allow_post_script: bool = Field(False, description="runs may execute a post script")

    @field_validator("device", mode="before")
    @classmethod
    def _device_any_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _default_queue_exists(self) -> Config:
        if self.default_queue not in self.queues:
            raise ValueError(f"default_queue {self.default_queue!r} is not a configured queue; "
                             f"queues: {', '.join(sorted(self.queues))}")
        return self

    def queue(self, name: str | None) -> tuple[str, QueueConfig]:
        """The queue called ``name`` (the default queue for None); a clear error otherwise."""
        name = name or self.default_queue
        if name not in self.queues:
            raise ParamError(f"no queue {name!r}; configured queues: "
                             f"{', '.join(sorted(self.queues))} (see `cryoweave config show`)")
        return name, self.queues[name]


@dataclass
class LoadedConfig:
    """A :class:`Config` and, for each top-level key (``queues.NAME`` for queues), its source."""

    config: Config
    sources: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cryoweave" / "config.yaml"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ParamError(f"{path}: cannot read the configuration ({exc})") from exc
    if not isinstance(data, dict):
        raise ParamError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def _env_overrides() -> list[tuple[str, dict[str, Any]]]:
    overrides: list[tuple[str, dict[str, Any]]] = []
    env = os.environ
    if env.get("CRYOWEAVE_DEVICE"):
        overrides.append(("env CRYOWEAVE_DEVICE", {"device": env["CRYOWEAVE_DEVICE"]}))
    if env.get("CRYOWEAVE_FFT_WORKERS"):
        overrides.append(("env CRYOWEAVE_FFT_WORKERS",
                          {"engine_threads": env["CRYOWEAVE_FFT_WORKERS"]}))
    if env.get("CRYOWEAVE_DASK_SCHEDULER"):
        overrides.append(("env CRYOWEAVE_DASK_SCHEDULER", {"queues": {"dask": {
            "kind": "dask", "address": env["CRYOWEAVE_DASK_SCHEDULER"]}}}))
    if env.get("CRYOWEAVE_QUEUE"):
        overrides.append(("env CRYOWEAVE_QUEUE", {"default_queue": env["CRYOWEAVE_QUEUE"]}))
    if env.get(POST_SCRIPT_ENV, "").strip() == "1":  # a site switch: only "1" enables
        overrides.append((f"env {POST_SCRIPT_ENV}", {"allow_post_script": True}))
    return overrides


def config_layers(project_root: str | Path | None) -> list[tuple[str, dict[str, Any]]]:
    """(source, settings) from lowest to highest precedence."""
    layers: list[tuple[str, dict[str, Any]]] = []
    user = user_config_path()
    if user.is_file():
        layers.append((str(user), _read_yaml(user)))
    site = os.environ.get(CONFIG_ENV_VAR)
    if site:
        site_path = Path(site)
        if not site_path.is_file():
            raise ParamError(f"${CONFIG_ENV_VAR}={site}: file not found")
        layers.append((str(site_path), _read_yaml(site_path)))
    if project_root is not None:
        project_file = Path(project_root) / PROJECT_CONFIG
        if project_file.is_file():
            layers.append((str(project_file), _read_yaml(project_file)))
    return layers + _env_overrides()


def load_config(project_root: str | Path | None = None) -> LoadedConfig:
    """The effective configuration for a project folder (or none), validated."""
    merged: dict[str, Any] = {}
    queues: dict[str, Any] = {}
    sources: dict[str, str] = {name: "default" for name in Config.model_fields}
    sources["queues.local"] = "default"
    files: list[Path] = []
    for source, data in config_layers(project_root):
        if not source.startswith("env "):
            files.append(Path(source))
        unknown = set(data) - set(Config.model_fields)
        if unknown:
            raise ParamError(f"{source}: unknown setting(s) {sorted(unknown)}; known: "
                             f"{', '.join(Config.model_fields)}")
        for key, value in data.items():
            if key == "queues":
                if not isinstance(value, dict):
                    raise ParamError(f"{source}: 'queues' must map names to queue settings")
                for name, settings in value.items():
                    queues[str(name)] = settings
                    sources[f"queues.{name}"] = source
            else:
                merged[key] = value
                sources[key] = source
    if queues:
        merged["queues"] = {"local": {"kind": "local"}, **queues}
    try:
        config = Config.model_validate(merged)
    except ValidationError as exc:
        problems = []
        for item in exc.errors():
            loc = ".".join(str(p) for p in item["loc"])
            where = sources.get(loc, sources.get(".".join(loc.split(".")[:2]), "")) or \
                sources.get(loc.split(".")[0], "")
            msg = item["msg"].removeprefix("Value error, ")
            problems.append(f"{loc or 'configuration'}: {msg}" + (f" (from {where})"
                                                                 if where else ""))
        raise ParamError(problems, context="configuration") from exc
    return LoadedConfig(config, sources, files)


def post_script_allowed(project_root: str | Path | None) -> bool:
    """Whether runs of this project may execute a command given in their parameters.

    Off unless ``allow_post_script: true`` is in a configuration file (site, user or the
    project's ``cryoweave.yaml``) or ``CRYOWEAVE_ALLOW_POST_SCRIPT=1`` is set: a params or
    workflow file alone can never make cryoweave run a command.
    """
    return load_config(project_root).config.allow_post_script


def describe_config(loaded: LoadedConfig) -> str:
    """The effective configuration as YAML, each setting followed by where it came from."""
    config = loaded.config
    data = config.model_dump(mode="json", exclude_defaults=False)
    lines = []
    for key in Config.model_fields:
        if key == "queues":
            lines.append("queues:")
            for name, queue in config.queues.items():
                lines.append(f"  {name}:  # from {loaded.sources.get(f'queues.{name}', '?')}")
                shown = queue.model_dump(mode="json", exclude_defaults=True)
                shown = {"kind": queue.kind, **shown}
                for line in yaml.safe_dump(shown, sort_keys=False).splitlines():
                    lines.append(f"    {line}")
            continue
        text = yaml.safe_dump({key: data[key]}, sort_keys=False).rstrip()
        first, *rest = text.splitlines()
        lines.append(f"{first}  # from {loaded.sources.get(key, 'default')}")
        lines.extend(rest)
    return "\n".join(lines) + "\n"
