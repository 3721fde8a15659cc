"""Errors a user can act on.

Every message is one line naming what is wrong and where (file, column, row, setting), so the
stage front door can print it without a traceback.
"""
from __future__ import annotations

from typing import Any


class AtlasInputError(ValueError):
    """Input that cannot be processed at all: bad file, missing column, bad setting, bad model."""


class ModelCodeError(AtlasInputError):
    """The user's own model code raised (import, factory, forward): the one-line message names the
    rows and module; `details` keeps the user's last frame for the stage report."""

    def __init__(self, message: str, **details: Any):
        super().__init__(message)
        self.details = details


class AtlasBundleError(Exception):
    """The bundle cannot be pushed: one or more checks failed (listed in the message)."""
