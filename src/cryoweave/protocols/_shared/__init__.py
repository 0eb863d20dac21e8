"""What several built-in protocols use (one implementation each; import the modules directly).

- ``device``: the device a compute step runs on, and what a step records about it.
- ``symmetry``: the one check of every ``symmetry`` parameter.
- ``checks``: a particle table against its stacks (complete, square, one box per group).
- ``summary``: the shared pieces of the protocols' ``summary()``.
- ``params``: parameter declarations several protocols share (``datadir``, ``strip_prefix``).
- ``particle_arrays``: the plan → step hand-off of particle metadata as one ``.npz`` (and
  the ``.npz`` helpers every step file uses).
- ``reconstruct``: insertion into half-map accumulators, half maps, FSC and pictures
  (ReconstructFourier and ReconstructHighRes).
"""
