"""The device a compute step runs on, and the facts a step records about it.

Every compute step reads ``ctx.device`` ("cpu" or "gpu"; "auto" is resolved here), moves its
batch to that device once with the engine's one conversion pair (`to_device`, `to_host`), keeps
its intermediates there and converts back where it writes files. With "cpu" the conversions are
no-ops (no copy), so CPU results are those of the NumPy code. A step records the device it used
in its result info (``{"device": ...}``), which the run log and ``cryoweave show`` report; a step
that may use the GPU is planned with ``compute_resources`` (``Resources(gpu=True)`` on a GPU run).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from cryoweave.engine import get_namespace, resolve_device, to_device, to_host
from cryoweave.plugin import Resources

__all__ = ["compute_resources", "device_info", "namespace", "step_device", "to_device",
           "to_host"]


def step_device(ctx: Any) -> str:
    """"cpu" or "gpu": the device of the run (``ctx.device``; "auto" resolved), logged once."""
    device = resolve_device(getattr(ctx, "device", None) or "cpu")
    logger = getattr(ctx, "logger", None)
    if logger is not None and getattr(ctx, "step_key", ""):
        logger.info("step %s runs on the %s", ctx.step_key, device.upper())
    return device


def namespace(device: str) -> ModuleType:
    """The array module of ``device`` (numpy for "cpu", cupy for "gpu")."""
    return get_namespace(device)


def compute_resources(ctx: Any, cpus: int = 1) -> Resources:
    """Resources of a compute step planned under ``ctx``: a GPU when the run uses one."""
    device = resolve_device(getattr(ctx, "device", None) or "cpu")
    return Resources(cpus=cpus, gpu=device == "gpu")


def device_info(device: str, **info: Any) -> dict[str, Any]:
    """A step's result info with the device it ran on (``show`` and the run log read it)."""
    return {**info, "device": device}
