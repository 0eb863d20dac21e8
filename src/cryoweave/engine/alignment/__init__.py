"""Angular assignment: global projection matching (``global_search``, ``pose_scores``) and
local refinement (``local_search``); re-exported by ``cryoweave.engine``.

``_score``: the Fourier band, particle preparation and NCC scores; ``_grid``: the coarse and
fine orientation grids; ``_global``: the global search; ``_local``: local refinement.
"""

from ._global import AlignmentResult, global_search, pose_scores
from ._local import local_search

__all__ = ["AlignmentResult", "global_search", "local_search", "pose_scores"]
