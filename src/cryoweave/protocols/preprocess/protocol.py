"""PreprocessMicrographs: Xmipp's micrograph preprocessing, exact, batched, streaming."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import model_validator

from cryoweave.engine import PreprocessSettings, preprocess_output_shape
from cryoweave.physical import MAX_DENOISE_ITERATIONS
from cryoweave.plugin import (
    ADVANCED,
    ForEachBatch,
    Input,
    ItemBatch,
    MicrographSet,
    Plan,
    PlanContext,
    Protocol,
    ProtocolOutputs,
    ProtocolParams,
    Step,
    SummaryContext,
    param,
)
from cryoweave.protocols._shared.device import compute_resources
from cryoweave.protocols._shared.summary import set_summary
from cryoweave.protocols.preprocess._step import OUTPUT_DIR, output_name, preprocess_step

OPERATIONS = ("do_crop", "do_log", "do_remove_bad_pixels", "do_invert", "do_downsample",
              "do_denoise", "do_gaussian", "do_highpass", "do_lowpass", "do_normalize")
LOG_COEFFICIENT_MAX = 1000.0  # |a|, |b| of the logarithm; larger drowns float32's precision
LOG_OFFSET_MAX = 1e6  # |c|, in the input's units (counts)
MAX_SIGMA_PX = 10_000.0  # a Gaussian wider than any micrograph keeps only its mean
MAX_DOWNSAMPLE_FACTOR = 100.0  # a 24k-px super-resolution micrograph to 240 px


class PreprocessMicrographs(Protocol):
    """Preprocess micrographs as Xmipp's "preprocess micrographs" does, in a fixed order:
    crop → log → bad pixels → invert → downsample → denoise → Gaussian → high-pass →
    low-pass → normalize, whatever the order of the switches.

    Differences from Xmipp (deliberate fixes): downsampling records the true output pixel size
    (pixel size · X / Xp, Xmipp writes pixel size · factor); denoising maps its result back to
    the input's intensity range (Xmipp leaves it in [0, 1]); a logarithm of a non-positive
    value fails with a message instead of writing NaNs; a micrograph is published only once its
    whole chain is done. The Gaussian is Xmipp's "real_gaussian": the multiplier
    exp(−π² σ² |w|²), whose real-space standard deviation is σ/√2 — settings carry over.
    The input may still be growing (streaming); new micrographs are processed as they arrive.
    """

    label = "preprocess micrographs"

    class Params(ProtocolParams):
        micrographs: Input[MicrographSet] = param(
            description="Micrographs to preprocess (may still be growing)", section="Input")
        do_crop: bool = param(False, section="Crop", description="Remove a border",
                              title="Crop borders")
        crop_px: int = param(10, ge=1, unit="px", section="Crop", visible_if={"do_crop": True},
                             description="Pixels removed from each border", title="Crop width")
        do_log: bool = param(False, section="Logarithm",
                             description="Take the logarithm y = a − b·ln(x + c)",
                             title="Log transform")
        # bounded so that a float32 micrograph keeps its contrast (Xmipp: a 4.431, b 0.402)
        log_a: float = param(4.431, ge=-LOG_COEFFICIENT_MAX, le=LOG_COEFFICIENT_MAX,
                             section="Logarithm", visible_if={"do_log": True},
                             description="a in y = a − b·ln(x + c)", title="Log coefficient a")
        log_b: float = param(0.402, ge=-LOG_COEFFICIENT_MAX, le=LOG_COEFFICIENT_MAX,
                             section="Logarithm", visible_if={"do_log": True},
                             description="b in y = a − b·ln(x + c)", title="Log coefficient b")
        log_c: float = param(336.6, ge=-LOG_OFFSET_MAX, le=LOG_OFFSET_MAX, section="Logarithm",
                             visible_if={"do_log": True},
                             description="c in y = a − b·ln(x + c)", title="Log coefficient c")
        do_remove_bad_pixels: bool = param(
            False, section="Bad pixels",
            description="Replace outliers by the median of their good 5×5 neighbours")
        bad_pixel_stddev: float = param(
            5.0, gt=0, section="Bad pixels", visible_if={"do_remove_bad_pixels": True},
            description="Pixels beyond mean ± this many standard deviations are bad",
            title="Bad-pixel threshold (standard deviations)")
        do_invert: bool = param(False, section="Contrast", description="Invert the contrast",
                                title="Invert contrast")
        do_downsample: bool = param(False, section="Downsample",
                                    description="Fourier downsample")
        downsample_factor: float = param(
            2.0, gt=1, le=MAX_DOWNSAMPLE_FACTOR, section="Downsample",
            visible_if={"do_downsample": True},
            description="Downsampling factor (non-integer allowed); the true output pixel "
                        "size is recorded")
        do_denoise: bool = param(False, section="Denoise",
                                 description="Total-variation denoising (Xmipp's model)",
                                 title="Denoise (total variation)")
        denoise_iterations: int = param(
            50, ge=1, le=MAX_DENOISE_ITERATIONS, section="Denoise", visible_if={"do_denoise": True},
            description="Iterations of the optimiser; the result keeps the input's range")
        do_gaussian: bool = param(False, section="Filters", description="Gaussian smoothing",
                                  title="Gaussian filter")
        gaussian_sigma_px: float = param(
            2.0, gt=0, le=MAX_SIGMA_PX, unit="px", section="Filters",
            visible_if={"do_gaussian": True},
            description="σ of Xmipp's real_gaussian: multiplier exp(−π²σ²|w|²), real-space "
                        "standard deviation σ/√2")
        do_highpass: bool = param(False, section="Filters",
                                  description="Raised-cosine high-pass", title="High-pass filter")
        highpass_cutoff: float = param(
            0.002, gt=0, lt=0.5, section="Filters", visible_if={"do_highpass": True},
            unit="1/px", description="Digital frequency where the roll-off ends (0–0.5)",
            title="High-pass cutoff")
        highpass_width: float = param(
            0.001, gt=0, le=0.5, section="Filters", visible_if={"do_highpass": True},
            expert=ADVANCED, unit="1/px", description="Width of the transition band",
            title="High-pass width")
        do_lowpass: bool = param(False, section="Filters", description="Raised-cosine low-pass",
                                 title="Low-pass filter")
        lowpass_cutoff: float = param(
            0.4, gt=0, lt=0.5, section="Filters", visible_if={"do_lowpass": True},
            unit="1/px", description="Digital frequency where the roll-off starts (0–0.5)",
            title="Low-pass cutoff")
        lowpass_width: float = param(
            0.001, gt=0, le=0.5, section="Filters", visible_if={"do_lowpass": True},
            expert=ADVANCED, unit="1/px", description="Width of the transition band",
            title="Low-pass width")
        do_normalize: bool = param(False, section="Normalize",
                                   description="Zero mean, unit standard deviation")
        batch_size: int = param(2, gt=0, le=1000, section="Performance", expert=ADVANCED,
                                description="Micrographs per step (bounds memory)")

        @model_validator(mode="after")
        def _consistent(self) -> PreprocessMicrographs.Params:
            if not any(getattr(self, name) for name in OPERATIONS):
                raise ValueError("no operation is enabled; switch on at least one of "
                                 + ", ".join(OPERATIONS))
            if self.do_highpass and self.do_lowpass and \
                    self.highpass_cutoff >= self.lowpass_cutoff:
                raise ValueError(f"highpass_cutoff={self.highpass_cutoff} is not below "
                                 f"lowpass_cutoff={self.lowpass_cutoff}: nothing would pass; "
                                 "lower the high-pass or raise the low-pass cutoff")
            settings(self)  # the engine's own checks, with their messages
            return self

    class Outputs(ProtocolOutputs):
        micrographs: MicrographSet

    def check_inputs(self, params: Any, inputs: Mapping[str, Any]) -> list[str]:
        micrographs = inputs.get("micrographs")
        if micrographs is None or micrographs.count() == 0:
            return []  # a streaming input: each micrograph is checked when it arrives
        frame = micrographs.to_frame(columns=["width_px", "height_px"], with_extra=False)
        shape = (int(frame["height_px"].min()), int(frame["width_px"].min()))
        try:
            preprocess_output_shape(shape, settings(params))
        except ValueError as exc:
            return [f"the smallest micrograph is {shape[1]}×{shape[0]}: {exc}"]
        return []

    def summary(self, ctx: SummaryContext) -> dict[str, Any]:
        summary = set_summary(ctx.output("micrographs"), "micrographs")
        return {**summary, "failed": ctx.total("failed")}

    streams_inputs = True  # micrographs are preprocessed as they arrive

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        chosen = settings_dict(params)

        def make_step(batch: ItemBatch) -> Step:
            items = batch.items.astype(object).where(batch.items.notna(), None)
            records = items.to_dict("records")
            acquisition = {k: batch.set_properties.get(k)
                           for k in ("voltage_kv", "cs_mm", "amplitude_contrast")}
            first = records[0]["item_id"]
            return Step(f"preprocess/{first:06d}", preprocess_step,
                        {"items": records, "settings": chosen, "acquisition": acquisition},
                        outputs=[f"{OUTPUT_DIR}/{output_name(r)}" for r in records],
                        resources=compute_resources(ctx),
                        label=f"preprocess {len(records)} micrographs")

        return Plan(streams=[ForEachBatch("micrographs", make_step, params.batch_size)])


def settings_dict(params: Any) -> dict[str, Any]:
    fields = PreprocessSettings.__dataclass_fields__
    return {name: getattr(params, name) for name in fields}


def settings(params: Any) -> PreprocessSettings:
    return PreprocessSettings(**settings_dict(params))
