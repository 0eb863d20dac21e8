"""``python -m cryoweave.cli``: the ``cryoweave`` command."""

from cryoweave.cli._main import main

main()
