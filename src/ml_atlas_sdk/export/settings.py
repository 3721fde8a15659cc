"""Export settings (defined with the other settings in ml_atlas_sdk.settings) and the escalation
ladder of partial overrides."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.settings import ExportSettings

__all__ = ["ExportSettings", "ladder_settings"]


def ladder_settings(base: ExportSettings, ladder: Sequence[Mapping[str, Any]]) -> list[tuple[dict, ExportSettings]]:
    """Each ladder step is a partial override of the configured export (not cumulative)."""
    steps = []
    for i, step in enumerate(ladder):
        if not isinstance(step, Mapping):
            raise AtlasInputError(f"escalation.ladder[{i}]: expected a mapping of export settings, got {step!r}")
        steps.append((dict(step), base.with_overrides(step, f"escalation.ladder[{i}]")))
    return steps
