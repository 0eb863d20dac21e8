"""Angular assignment: global projection matching (``global_search``, ``pose_scores``) and
local refinement (``local_search``); re-exported by ``cryoweave.engine``.

``_score``: the Fourier band, particle preparation and NCC scores; ``_grid``: the coarse and
fine orientation grids; ``_global``: the global search; ``_local``: local refinement;
``_marginal``: posterior-weighted insertion around given poses.
"""

from ._global import AlignmentResult, global_search, pose_scores
from ._local import local_search
from ._marginal import (
    LocalGrid,
    inverse_noise_power,
    kept_poses,
    marginal_insert,
    shell_residual_power,
)

__all__ = ["AlignmentResult", "LocalGrid", "global_search", "inverse_noise_power",
           "kept_poses", "local_search", "marginal_insert", "pose_scores", "shell_residual_power"]
