"""ReconstructHighRes: Xmipp-style iterative 3D refinement (see specs/reconstruct_highres.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import field_validator, model_validator

from cryoweave.formats import MAX_BOX_PX
from cryoweave.physical import (
    DEFOCUS_CHANGE_A,
    MAX_BATCH_IMAGES,
    REGULARIZATION,
    RESOLUTION_OFFSET_A,
)
from cryoweave.plugin import (
    ADVANCED,
    EXPERT,
    Input,
    ParticleSet,
    Plan,
    PlanContext,
    Protocol,
    ProtocolOutputs,
    ProtocolParams,
    RecordSet,
    SummaryContext,
    VolumeSet,
    param,
)
from cryoweave.protocols._shared.summary import reconstruction_summary
from cryoweave.protocols._shared.symmetry import SYMMETRY_NAMES, check_symmetry
from cryoweave.protocols.highres._plan import plan_refinement
from cryoweave.protocols.highres._references import POSITIVITY_MAX_NEGATIVE_MASS
from cryoweave.protocols.highres._schedule import MAX_ITERATIONS, parse_floors
from cryoweave.workflow import POST_SCRIPT_ENV, PROJECT_CONFIG, post_script_allowed

Alignment = Literal["global", "local", "automatic", "stochastic", "none"]


class ReconstructHighRes(Protocol):
    """Iterative high-resolution 3D refinement against one or two references, in the manner
    of Xmipp's highres protocol: a multiresolution schedule (the working pixel size follows the
    resolution reached), gold-standard halves aligned to their own references, global
    projection matching (CTF on the particle side, normalised cross-correlation) or local
    continuous refinement, particle weights, weighted reconstruction with symmetry, and the
    half-map FSC steering the next iteration.

    Deliberate differences from Xmipp: references are weighted by sqrt(2·FSC/(1+FSC)) (the
    expected correlation with the truth) and keep their DC; the CTF is used in full (never a
    phase flip of unflipped data); restricting the reconstruction by tilt uses the tilt angle;
    positivity is skipped for a reference that is not a non-negative density (25 % or more of
    its mass negative, as in maps normalised to zero mean: clipping them biases the alignment).
    """

    label = "refine 3D (highres)"

    class Params(ProtocolParams):
        # -- input
        particles: Input[ParticleSet] | None = param(
            None, section="Input", description="Particles with CTF (optional when continuing)")
        initial_volumes: Input[VolumeSet] | None = param(
            None, section="Input",
            description="One map, or one per half (two maps or a map with half maps); none: "
                        "reconstruct from the particles' poses")
        initial_resolution_a: float | None = param(
            None, ge=1, le=200, unit="Å", section="Input",
            description="Low-pass the initial volumes to this resolution and start the "
                        "schedule from it (RELION's --ini_high); default: 4·pixel size "
                        "(global) or pixel size/0.45 (local), low-passed at that + offset")
        continue_from: int | str | None = param(
            None, section="Input", description="A previous ReconstructHighRes run (id or "
                                               "label): start from its last iteration")
        particle_radius_px: float = param(
            -1, le=MAX_BOX_PX / 2, unit="px", section="Input",
            description="Particle radius at the particles' pixel size; ≤ 0: half the box")
        symmetry: str = param("c1", section="Input",
                              description=f"Symmetry ({SYMMETRY_NAMES})")
        # -- angular assignment
        alignment: Alignment = param(
            "global", section="Angular assignment",
            description="global, local, automatic (global 1–3 then local), stochastic, none")
        iterations: int | None = param(None, ge=1, le=MAX_ITERATIONS,
                                       section="Angular assignment",
                                       description="Iterations (default 3; automatic 5; none 1)")
        multiresolution: bool = param(True, section="Angular assignment",
                                      description="Adapt the pixel size to the resolution")
        max_target_resolution_a: str = param(
            "15 8 4", section="Angular assignment", unit="Å",
            description="Resolution floor per iteration, e.g. '15 8 4' or '2x15 8'",
            title="Maximum target resolution")
        max_shift_percent: float = param(10.0, gt=0, le=50, section="Angular assignment",
                                         unit="%", description="Maximum shift (% of box)",
                                         title="Maximum shift")
        min_tilt_deg: float = param(0.0, ge=0, le=180, section="Angular assignment",
                                    expert=ADVANCED, unit="°",
                                    description="Smallest tilt of the projection directions",
                                    title="Minimum tilt")
        max_tilt_deg: float = param(180.0, ge=0, le=180, section="Angular assignment",
                                    expert=ADVANCED, unit="°",
                                    description="Largest tilt of the projection directions",
                                    title="Maximum tilt")
        # -- local
        local_shifts: bool = param(True, section="Local refinement",
                                   visible_if={"alignment": ["local", "automatic"]},
                                   description="Optimise shifts")
        local_max_shift_percent: float = param(
            2.0, gt=0, le=50, section="Local refinement", expert=ADVANCED, unit="%",
            visible_if={"alignment": ["local", "automatic"]},
            description="Maximum shift change (% of box)", title="Local maximum shift")
        local_angles: bool = param(True, section="Local refinement",
                                   visible_if={"alignment": ["local", "automatic"]},
                                   description="Optimise angles (within 3·atan(1/k))")
        local_scale: bool = param(False, section="Local refinement", expert=ADVANCED,
                                  visible_if={"alignment": ["local", "automatic"]},
                                  description="Optimise each particle's magnification")
        local_max_scale_change: float = param(
            0.02, gt=0, lt=0.5, section="Local refinement", expert=ADVANCED,
            visible_if={"local_scale": True}, description="Maximum magnification change",
            title="Local maximum scale change")
        local_defocus: bool = param(False, section="Local refinement", expert=ADVANCED,
                                    visible_if={"alignment": ["local", "automatic"]},
                                    description="Optimise each particle's defocus")
        local_max_defocus_change_a: float = param(
            200.0, gt=0, le=DEFOCUS_CHANGE_A.high, unit="Å", section="Local refinement",
            expert=ADVANCED,
            visible_if={"local_defocus": True}, description="Maximum defocus change",
            title="Local maximum defocus change")
        local_gray: bool = param(False, section="Local refinement", expert=ADVANCED,
                                 visible_if={"alignment": ["local", "automatic"]},
                                 description="Fit each particle's gray values (a·model + b)",
                                 title="Local gray-value correction")
        local_max_gray_scale_change: float = param(
            0.5, gt=0, lt=1, section="Local refinement", expert=ADVANCED,
            visible_if={"local_gray": True}, description="Maximum contrast change (|a − 1|)",
            title="Local maximum gray scale change")
        local_max_gray_offset_sigma: float = param(
            3.0, gt=0, le=100, section="Local refinement", expert=ADVANCED,
            visible_if={"local_gray": True},
            description="Maximum offset b, in standard deviations of the residual",
            title="Local maximum gray offset (standard deviations)")
        # -- weights
        weight_cc_percentile: bool = param(
            True, section="Weights", description="Weight by the CC percentile in defocus groups")
        weight_angular_stability: bool = param(
            False, section="Weights", expert=ADVANCED,
            description="Weight by the stability of the orientation across iterations")
        weight_ssnr: bool = param(False, section="Weights", expert=ADVANCED,
                                  description="Weight by the particle's estimated SNR")
        weight_continuous: bool = param(False, section="Weights", expert=ADVANCED,
                                        description="Weight by the CC percentile overall")
        min_cc_weight: float = param(0.1, ge=0, le=1, section="Weights", expert=ADVANCED,
                                     description="Weight of the worst particle",
                                     title="Minimum CC weight")
        final_map_weights: Literal["unit", "refinement"] = param(
            "unit", section="Weights", expert=ADVANCED,
            description="Weights of the final map: unit (every particle kept by the last "
                        "iteration counts once) or the refinement's weights (which steer the "
                        "iterations; on a homogeneous set they lower the map's resolution)")
        final_reconstruction: Literal["marginal", "best_pose"] = param(
            "marginal", section="Weights", expert=ADVANCED,
            description="How the final maps take each particle: marginal (over the poses "
                        "near its refined one, weighted by their posterior probability, as "
                        "RELION reconstructs; closer to the map the true poses would give) or "
                        "best_pose (once, at its refined pose; always so when the last "
                        "iteration held the poses)")
        # -- halves and resolution
        split: Literal["fixed", "stochastic"] = param(
            "fixed", section="Resolution", expert=ADVANCED,
            description="fixed halves for the whole run, or a new split each iteration")
        resolution_criterion: float = param(0.5, gt=0, lt=1, section="Resolution",
                                            description="FSC threshold steering the schedule")
        resolution_offset_a: float = param(
            2.0, **RESOLUTION_OFFSET_A.bounds(), section="Resolution", unit="Å",
            description="Added to the resolution for the next low-pass and angular step")
        # -- next reference
        next_lowpass: bool = param(True, section="Next reference",
                                   description="Low-pass at resolution + offset",
                                   title="Low-pass the next reference")
        next_spherical_mask: bool = param(True, section="Next reference",
                                          description="Soft spherical mask",
                                          title="Spherical mask on the next reference")
        next_positivity: bool = param(True, section="Next reference",
                                      description="Set negative values to zero, where the "
                                      "reference is a non-negative density (under "
                                      f"{100 * POSITIVITY_MAX_NEGATIVE_MASS:.0f} % of its mass "
                                      "negative)",
                                      title="Positivity on the next reference")
        next_mask: Input[VolumeSet] | None = param(None, section="Next reference",
                                                   expert=ADVANCED,
                                                   description="A mask instead of the sphere",
                                                   title="Mask for the next reference")
        next_dropout: float = param(0.0, ge=0, lt=1, section="Next reference", expert=EXPERT,
                                    description="Fraction of voxels zeroed at random",
                                    title="Dropout on the next reference")
        # -- stochastic
        stochastic_images_per_half: int = param(
            250, gt=0, le=MAX_BATCH_IMAGES, section="Stochastic",
            visible_if={"alignment": "stochastic"},
            description="Particles per half and iteration")
        stochastic_alpha: float = param(0.1, gt=0, le=1, section="Stochastic",
                                        visible_if={"alignment": "stochastic"},
                                        description="V ← (1−α)·V_prev + α·V_new")
        # -- reconstruction
        restrict_reconstruction_tilt: bool = param(
            False, section="Reconstruction", expert=ADVANCED,
            description="Use only particles whose tilt is in the range below")
        restrict_tilt_min_deg: float = param(88.0, ge=0, le=180, section="Reconstruction",
                                             expert=ADVANCED, unit="°",
                                             visible_if={"restrict_reconstruction_tilt": True},
                                             description="Smallest tilt kept",
                                             title="Reconstruction minimum tilt")
        restrict_tilt_max_deg: float = param(92.0, ge=0, le=180, section="Reconstruction",
                                             expert=ADVANCED, unit="°",
                                             visible_if={"restrict_reconstruction_tilt": True},
                                             description="Largest tilt kept",
                                             title="Reconstruction maximum tilt")
        correct_ctf_envelope: bool = param(
            False, section="Reconstruction", expert=ADVANCED,
            description="Include the particles' CTF B-factor envelope (rlnCtfBfactor) in the "
                        "CTF, so that the reconstruction divides it out")
        regularization: float = param(
            1e-3, **REGULARIZATION.bounds(), section="Reconstruction", expert=EXPERT,
            description="Wiener constant relative to the mean weight")
        keep_intermediate: bool = param(False, section="Output", expert=ADVANCED,
                                        description="Keep every iteration's maps")
        seed: int = param(0, section="Output", expert=ADVANCED,
                          description="Seed of random splits, subsets and dropout")
        # -- post-processing
        adhoc_mask: Input[VolumeSet] | None = param(None, section="Post-processing",
                                                    description="Mask for the FSC",
                                                    title="Ad-hoc mask")
        post_script: str | None = param(
            None, section="Post-processing", expert=ADVANCED,
            description="A command run at the end with the final map as last argument. "
                        "Refused unless enabled: CRYOWEAVE_ALLOW_POST_SCRIPT=1 in the "
                        "environment, or 'allow_post_script: true' in the project's "
                        "cryoweave.yaml", title="Post-iteration script")

        @field_validator("symmetry")
        @classmethod
        def _symmetry(cls, value: str) -> str:
            return check_symmetry(value)

        @field_validator("max_target_resolution_a")
        @classmethod
        def _floors(cls, value: str) -> str:
            parse_floors(value, 1)
            return value

        @model_validator(mode="after")
        def _consistent(self) -> ReconstructHighRes.Params:
            if self.particles is None and self.continue_from is None:
                raise ValueError("give particles, or continue_from a previous run")
            if self.initial_resolution_a is not None and self.continue_from is not None:
                raise ValueError("initial_resolution_a applies to initial volumes; a run that "
                                 "continues_from another starts from its resolution: drop one")
            if self.min_tilt_deg >= self.max_tilt_deg:
                raise ValueError(f"min_tilt_deg={self.min_tilt_deg} must be below "
                                 f"max_tilt_deg={self.max_tilt_deg}")
            if self.restrict_tilt_min_deg >= self.restrict_tilt_max_deg:
                raise ValueError("restrict_tilt_min_deg must be below restrict_tilt_max_deg")
            return self

    class Outputs(ProtocolOutputs):
        volume: VolumeSet
        particles: ParticleSet
        fsc: RecordSet

    def check_inputs(self, params: ReconstructHighRes.Params, inputs: Mapping[str, Any]
                     ) -> list[str]:
        problems = []
        particles = inputs.get("particles")
        if particles is not None:
            props = particles.properties
            if not props.get("has_ctf"):
                problems.append("the particles have no CTF (defocus); refinement needs it")
            if params.alignment in ("local", "none") and not props.get("has_poses") and \
                    params.continue_from is None:
                problems.append(f"alignment={params.alignment!r} needs particles with poses; "
                                "use global or automatic alignment")
            pixel = props.get("pixel_size_a")
            if params.initial_resolution_a is not None and pixel and \
                    params.initial_resolution_a < 2 * pixel:
                problems.append(f"initial_resolution_a={params.initial_resolution_a} Å is "
                                f"beyond Nyquist of the particles ({2 * pixel:.3g} Å); give a "
                                "coarser resolution, e.g. 30")
            if params.initial_volumes is None and not props.get("has_poses") and \
                    params.continue_from is None:
                problems.append("without initial_volumes the particles must have poses (the "
                                "first reference is reconstructed from them)")
        volumes = inputs.get("initial_volumes")
        if volumes is not None and volumes.count() > 2:
            problems.append(f"initial_volumes has {volumes.count()} maps; give one, or one "
                            "per half")
        return problems

    def check_project(self, params: ReconstructHighRes.Params, project: Any) -> list[str]:
        if params.post_script is not None and \
                not post_script_allowed(project.root if project is not None else None):
            return [f"post_script: running a command from the parameters is disabled; enable "
                    f"it with {POST_SCRIPT_ENV}=1 or 'allow_post_script: true' in the "
                    f"project's {PROJECT_CONFIG}, or remove post_script"]
        if params.continue_from is None:
            return []
        run = project.find_run(params.continue_from) if project is not None else None
        if run is None:
            return [f"continue_from: there is no run {params.continue_from!r} in this project"]
        if not run.protocol.endswith(":ReconstructHighRes") or run.status != "finished":
            return [f"continue_from: run {run.id} is a {run.status} {run.protocol} run; give a "
                    "finished ReconstructHighRes run"]
        return []

    def summary(self, ctx: SummaryContext) -> dict[str, Any]:
        summary = reconstruction_summary(ctx)
        particles = ctx.output("particles")
        rejected = particles.properties.get("rejected_particles") if particles else None
        if rejected is not None:
            summary["particles_rejected"] = int(rejected)
        return summary

    def plan(self, params: ReconstructHighRes.Params, ctx: PlanContext) -> Plan:
        return plan_refinement(params, ctx)

