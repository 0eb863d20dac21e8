"""Alembic migrations of the project database (``env.py`` + ``versions/``), run by
:func:`cryoweave.store._migrate.upgrade`; no ``alembic.ini`` is needed at run time.

A new migration (after changing :mod:`cryoweave.store.schema`)::

    python -m cryoweave.store._migrate revision "add runs.priority"

then review the generated file, keep it idempotent where an older project may already have
the change, and bump ``SCHEMA_VERSION``/``HEAD_REVISION`` in ``store/schema.py``.
"""
