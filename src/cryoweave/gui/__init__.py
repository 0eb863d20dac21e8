"""The web GUI: a Starlette application over a project (``cryoweave gui``)."""

from cryoweave.gui.app import create_app

__all__ = ["create_app"]
