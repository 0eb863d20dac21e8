"""``Input[SetType]``: a parameter that references another run's output or a file to import.

In JSON an input is ``{"run": 3, "output": "particles"}`` (run id or run label) or a path
string (``"particles.star"``, ``"mics/*.mrc"``) that the runtime imports as an implicit run.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

SetT = TypeVar("SetT")


class InputRef(BaseModel):
    """A resolved or unresolved reference to a set: either ``run``+``output`` or ``path``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    EXPECTED: ClassVar[str] = ('expected {"run": <id or label>, "output": <name>} or a file '
                               "path string")  # what error messages say a reference is

    run: int | str | None = None
    output: str | None = None
    path: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> InputRef:
        if self.path is not None and (self.run is not None or self.output is not None):
            raise ValueError("give either a path or {run, output}, not both")
        if self.path is None and (self.run is None or not self.output):
            raise ValueError(self.EXPECTED)
        return self

    @property
    def is_path(self) -> bool:
        return self.path is not None

    def describe(self) -> str:
        return self.path if self.path is not None else f"run {self.run!r} output {self.output!r}"


def _coerce(value: Any) -> Any:
    if isinstance(value, str):
        return {"path": value}
    return value


class InputSpec:
    """Marker carried in ``Annotated`` metadata: which set kind this input accepts."""

    def __init__(self, set_type: type):
        self.set_type = set_type

    @property
    def kind(self) -> str:
        return self.set_type.kind


_REF_SCHEMA_DOC = "a reference to another run's output, or a path to import"


class Input(Generic[SetT]):
    """``Input[ParticleSet]`` — use as a parameter annotation in a protocol's ``Params``."""

    _cache: ClassVar[dict[type, Any]] = {}

    def __class_getitem__(cls, set_type: type) -> Any:  # type: ignore[override]
        if set_type not in cls._cache:
            schema = {
                "description": _REF_SCHEMA_DOC,
                "x-input": {"set": set_type.kind},
                "anyOf": [
                    {
                        "type": "object",
                        "properties": {
                            "run": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                            "output": {"type": "string"},
                        },
                        "required": ["run", "output"],
                        "additionalProperties": False,
                    },
                    {"type": "string", "description": "file path or glob pattern"},
                ],
            }
            cls._cache[set_type] = Annotated[
                InputRef,
                BeforeValidator(_coerce),
                WithJsonSchema(schema),
                InputSpec(set_type),
            ]
        return cls._cache[set_type]


def input_specs(model: type[BaseModel]) -> dict[str, InputSpec]:
    """Map field name → InputSpec for every ``Input[...]`` field (optional ones included)."""
    specs: dict[str, InputSpec] = {}
    for name, info in model.model_fields.items():
        for meta in info.metadata:
            if isinstance(meta, InputSpec):
                specs[name] = meta
        annotation = info.annotation
        for arg in getattr(annotation, "__args__", ()) or ():
            for meta in getattr(arg, "__metadata__", ()) or ():
                if isinstance(meta, InputSpec):
                    specs[name] = meta
    return specs


__all__ = ["Field", "Input", "InputRef", "InputSpec", "input_specs"]
