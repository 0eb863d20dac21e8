"""Protocol declarations: params schema metadata, inputs, validation, registry."""

from __future__ import annotations

import enum
import json

import pytest
from pydantic import ValidationError, model_validator

from cryoweave.errors import ParamError
from cryoweave.plugin import (
    EXPERT,
    Input,
    ParticleSet,
    Protocol,
    ProtocolOutputs,
    ProtocolParams,
    VolumeSet,
    param,
    registry,
)
from cryoweave.workflow import validate_run


class Alignment(enum.StrEnum):
    GLOBAL = "global"
    LOCAL = "local"


class Example(Protocol):
    """Help text shown in the form."""

    label = "example"
    schema_version = 2

    class Params(ProtocolParams):
        particles: Input[ParticleSet] = param(description="particles to use", section="Input")
        reference: Input[VolumeSet] | None = param(None, description="optional map")
        box_px: int = param(64, gt=0, unit="px", description="box", section="Main")
        alignment: Alignment = param(Alignment.GLOBAL, description="how to align")
        do_lowpass: bool = param(False, description="low-pass?")
        lowpass_a: float = param(8.0, gt=0, unit="Å", visible_if={"do_lowpass": True},
                                 expert=EXPERT, description="cutoff")

        @model_validator(mode="after")
        def _even_box(self) -> Example.Params:
            if self.box_px % 2:
                raise ValueError(f"box_px={self.box_px} must be even; use {self.box_px + 1}")
            return self

    class Outputs(ProtocolOutputs):
        volume: VolumeSet


def test_form_schema_carries_metadata():
    schema = Example.form_schema()
    props = schema["properties"]
    assert schema["description"] == "Help text shown in the form."
    assert schema["x-outputs"] == {"volume": {"set": "volumes"}}
    assert props["particles"]["x-input"] == {"set": "particles"}
    assert props["box_px"]["unit"] == "px" and props["box_px"]["section"] == "Main"
    assert props["lowpass_a"]["visible_if"] == {"do_lowpass": True}
    assert props["lowpass_a"]["expert"] == EXPERT
    assert schema["required"] == ["particles"]
    json.dumps(schema)  # plain JSON, renderable without Python


def test_enums_by_value_and_frozen_params():
    params = Example.Params(particles="a.star", alignment="local")
    assert params.model_dump(mode="json")["alignment"] == "local"
    with pytest.raises(ValidationError, match="frozen"):
        params.box_px = 3  # type: ignore[misc]


def test_every_problem_listed_at_once(tmp_path):
    with pytest.raises(ParamError) as info:
        validate_run(None, Example, {"box_px": -2, "alignment": "sideways", "unknown": 1,
                                     "reference": {"run": 4}})
    problems = "\n".join(info.value.problems)
    assert "missing required parameter 'particles'" in problems
    assert "box_px" in problems and "alignment" in problems and "'unknown'" in problems
    assert "reference" in problems
    assert len(info.value.problems) == 5


def test_unknown_key_in_an_input_reference_is_named(tmp_path):
    # a reference copied from a stored run carries its resolved "set": it is the key that is
    # unknown, not the parameter (the message used to say "unknown parameter 'particles'")
    with pytest.raises(ParamError) as info:
        validate_run(None, Example, {"particles": {"run": 1, "output": "particles", "set": 1}})
    assert info.value.problems == [
        "input 'particles': unknown key 'set'; expected {\"run\": <id or label>, "
        "\"output\": <name>} or a file path string"]


def test_cross_field_validator_names_value_and_fix(tmp_path):
    (tmp_path / "p.star").write_text("")
    with pytest.raises(ParamError, match="box_px=63 must be even; use 64"):
        validate_run(None, Example, {"particles": str(tmp_path / "p.star"), "box_px": 63})


def test_registry_finds_builtins_by_many_names():
    reg = registry()
    cls = reg.get("cryoweave:ImportParticles")
    assert reg.get("ImportParticles") is cls and reg.get("import-particles") is cls
    assert cls.identity() == "cryoweave:ImportParticles"
    with pytest.raises(ParamError, match=r"unknown protocol 'Nope'.*ImportParticles"):
        reg.get("Nope")
