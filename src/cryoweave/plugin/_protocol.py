"""The ``Protocol`` base class: one declaration drives the form, validation, JSON and the plan."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cryoweave.plugin._inputs import InputSpec, input_specs
from cryoweave.plugin._params import ProtocolParams
from cryoweave.plugin._plan import Plan
from cryoweave.plugin._preview import SetPreview


class ProtocolOutputs:
    """Declare outputs as annotations: ``particles: ParticleSet``."""


@dataclass
class PlanContext:
    """What ``Protocol.plan`` may use; it runs in the runner, which owns the database."""

    run_id: int
    run_dir: Path
    inputs: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    threads: int = 1
    project: Any = None

    def input(self, name: str) -> Any:
        """The resolved set handle of input ``name`` (``None`` for an unset optional input)."""
        return self.inputs.get(name)


@dataclass
class SummaryContext:
    """What ``Protocol.summary`` may use: the stored params, the output sets and the ``info``
    each finished step returned (step key → dict)."""

    run_id: int
    params: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    steps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def output(self, name: str) -> Any:
        """The set handle of output ``name`` (``None`` when the protocol has no such output)."""
        return self.outputs.get(name)

    def total(self, key: str) -> int:
        """The sum of ``info[key]`` over the finished steps (e.g. ``"failed"`` items)."""
        return int(sum(info.get(key) or 0 for info in self.steps.values()
                       if isinstance(info.get(key), int | float)))


class Protocol:
    """Base of every protocol.

    Subclasses set a docstring (the form's help), ``label``, a nested ``Params`` model, an
    ``Outputs`` declaration and implement :meth:`plan`. ``schema_version`` is bumped when the
    params change incompatibly; :meth:`migrate_params` upgrades stored params.
    """

    label: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1
    plugin: ClassVar[str] = ""  # set by the registry
    renamed_from: ClassVar[tuple[str, ...]] = ()
    # params forwarded to the implicit import of an input given as a path, per input
    import_options: ClassVar[dict[str, tuple[str, ...]]] = {}
    # True when plan() consumes its inputs while they are still open (`ForEachBatch` streams);
    # otherwise the runner waits until every input set is closed before planning, so that a
    # run in a workflow never plans from part of its producer's output
    streams_inputs: ClassVar[bool] = False
    Params: ClassVar[type[ProtocolParams]] = ProtocolParams
    Outputs: ClassVar[type[ProtocolOutputs]] = ProtocolOutputs

    # -- declaration introspection -------------------------------------------------------
    @classmethod
    def name(cls) -> str:
        return cls.__name__

    @classmethod
    def identity(cls) -> str:
        """The persisted protocol identity, ``plugin:ClassName``."""
        return f"{cls.plugin or 'unregistered'}:{cls.__name__}"

    @classmethod
    def help(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def inputs(cls) -> dict[str, InputSpec]:
        return input_specs(cls.Params)

    @classmethod
    def outputs(cls) -> dict[str, type]:
        """Output name → set type."""
        hints = typing.get_type_hints(cls.Outputs)
        return {k: v for k, v in hints.items() if not k.startswith("_")}

    @classmethod
    def form_schema(cls) -> dict[str, Any]:
        """JSON Schema of the params with the protocol's help, identity and outputs."""
        schema = cls.Params.model_json_schema()
        schema["title"] = cls.label or cls.__name__
        schema["description"] = cls.help()
        schema["x-protocol"] = cls.identity()
        schema["x-schema-version"] = cls.schema_version
        schema["x-outputs"] = {k: {"set": v.kind} for k, v in cls.outputs().items()}
        return schema

    @classmethod
    def migrate_params(cls, from_version: int, params: dict[str, Any]) -> dict[str, Any]:
        """Upgrade params stored with an older ``schema_version`` (identity by default)."""
        return params

    # -- behaviour ------------------------------------------------------------------------
    def check_inputs(self, params: Any, inputs: Mapping[str, Any]) -> list[str]:
        """Problems that need the resolved inputs (e.g. a box larger than the input's).

        Runs before anything is created; return messages naming the value and the fix.
        """
        return []

    def check_project(self, params: Any, project: Any) -> list[str]:
        """Problems that need the project (e.g. a run referred to by a parameter); ``project``
        is None when the project does not exist yet. Runs before anything is created."""
        return []

    def preview(self, params: Any) -> dict[str, SetPreview]:
        """For importers: output name → what the run will produce, from headers and metadata.

        Runs before anything is created, after :meth:`check_inputs`; cheap (no pixel data).
        Raises :class:`~cryoweave.errors.InputError` for a file the run would fail on. When
        a path is given for another protocol's input, these previews are what that
        protocol's ``check_inputs`` sees. Protocols that import nothing return ``{}``.
        """
        return {}

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        raise NotImplementedError(f"{type(self).__name__}.plan")

    def summary(self, ctx: SummaryContext) -> dict[str, Any]:
        """The few numbers a person looks at first (resolution, counts, pixel size, box), as
        a flat JSON object; printed by ``run-protocol`` and ``show`` and kept under
        ``"summary"`` in their ``--json``. Keys end with their unit (``_a`` Å, ``_px``).
        Called on finished and unfinished runs alike: use what exists. Default: nothing."""
        return {}
