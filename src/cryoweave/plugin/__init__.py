"""The authoring API a plugin writer imports: protocols, params, inputs, steps and plans."""

from cryoweave.plugin._inputs import Input, InputRef, InputSpec
from cryoweave.plugin._params import (
    ADVANCED,
    EXPERT,
    NORMAL,
    ProtocolParams,
    field_meta,
    field_title,
    param,
)
from cryoweave.plugin._plan import (
    Derived,
    ForEachBatch,
    ItemBatch,
    Plan,
    Resources,
    Step,
    StepContext,
    StepResult,
    Watch,
    WorkUnit,
    resolve_function,
)
from cryoweave.plugin._preview import SetPreview
from cryoweave.plugin._protocol import PlanContext, Protocol, ProtocolOutputs, SummaryContext
from cryoweave.plugin._registry import Plugin, Registry, registry
from cryoweave.store import MicrographSet, ParticleSet, RecordSet, VolumeSet

__all__ = [
    "ADVANCED",
    "EXPERT",
    "NORMAL",
    "Derived",
    "ForEachBatch",
    "Input",
    "InputRef",
    "InputSpec",
    "ItemBatch",
    "MicrographSet",
    "ParticleSet",
    "Plan",
    "PlanContext",
    "Plugin",
    "Protocol",
    "ProtocolOutputs",
    "ProtocolParams",
    "RecordSet",
    "Registry",
    "Resources",
    "SetPreview",
    "Step",
    "StepContext",
    "StepResult",
    "SummaryContext",
    "VolumeSet",
    "Watch",
    "WorkUnit",
    "field_meta",
    "field_title",
    "param",
    "registry",
    "resolve_function",
]
