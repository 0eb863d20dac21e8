"""The exception hierarchy: one root, user errors separated from framework failures.

Every user-facing message names the bad value (file, parameter, run), what was expected and
the fix. The CLI prints ``str(error)`` without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations


class CryoweaveError(Exception):
    """Root of every error cryoweave raises on purpose."""


class ParamError(CryoweaveError):
    """Protocol parameters are invalid. ``problems`` lists every problem found, one per line."""

    def __init__(self, problems: list[str] | str, *, context: str = ""):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        head = f"{context}: " if context else ""
        if len(self.problems) == 1:
            message = head + self.problems[0]
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"{head}{len(self.problems)} problems found:\n{lines}"
        super().__init__(message)


class InputError(CryoweaveError):
    """An input file is missing, truncated, of the wrong size or lacks a required column."""


class StorageError(CryoweaveError):
    """The project database or folder cannot be used (locked, wrong schema, unwritable)."""


class StepFailed(CryoweaveError):
    """A step of a run failed; wraps the original error with the run id and step key."""

    def __init__(self, run_id: int, step_key: str, message: str):
        self.run_id = run_id
        self.step_key = step_key
        self.original_message = message
        super().__init__(f"run {run_id}, step {step_key!r} failed: {message}")


class StopRequested(CryoweaveError):
    """A run was asked to stop (``cryoweave stop RUN``)."""
