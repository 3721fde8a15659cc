"""Errors a user can act on.

Every message is one line naming what is wrong and where (file, column, row, setting), so the
stage front door can print it without a traceback.
"""


class AtlasInputError(ValueError):
    """Input that cannot be processed at all: bad file, missing column, bad setting, bad model."""


class AtlasBundleError(Exception):
    """The bundle cannot be pushed: one or more checks failed (listed in the message)."""
