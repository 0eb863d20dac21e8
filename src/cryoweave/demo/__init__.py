"""``cryoweave demo`` (``run_demo``) and the synthetic data it and the tests use (``synthetic``)."""

from cryoweave.demo._demo import run_demo

__all__ = ["run_demo"]
