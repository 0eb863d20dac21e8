"""The web GUI: a Starlette application over a project (``cryoweave gui``)."""

from cryoweave.gui._security import is_loopback, new_token
from cryoweave.gui.app import create_app

__all__ = ["create_app", "is_loopback", "new_token"]
