"""Export settings and the escalation ladder of partial overrides."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.metadata import MIN_OPSET


@dataclass(frozen=True)
class ExportSettings:
    opset: int = 17
    do_constant_folding: bool = True
    dynamo: bool = False
    batch_size: int = 64

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], setting: str = "export") -> "ExportSettings":
        settings = cls().with_overrides(raw, setting)
        if settings.batch_size < 2:
            raise AtlasInputError(f"{setting}.batch_size: {settings.batch_size} is below 2; a batch of 1 lets the exporter specialise the batch axis")
        return settings

    @classmethod
    def from_used(cls, used: Mapping[str, Any]) -> "ExportSettings":
        """The settings part of a recorded `settings_used` (which also holds step and model opset)."""
        return cls(**{f.name: used[f.name] for f in fields(cls)})

    def with_overrides(self, overrides: Mapping[str, Any], setting: str) -> "ExportSettings":
        known = {f.name: f.type for f in fields(self)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise AtlasInputError(f"{setting}: unknown export setting(s) {unknown}; known: {sorted(known)}")
        values = {k: _coerce(k, v, setting) for k, v in overrides.items()}
        return replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coerce(key: str, value: Any, setting: str) -> Any:
    if key in ("opset", "batch_size"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise AtlasInputError(f"{setting}.{key}: expected an integer, got {value!r}")
        if key == "opset" and value < MIN_OPSET:
            raise AtlasInputError(f"{setting}.opset: {value} is below the minimum opset {MIN_OPSET}")
        return value
    if not isinstance(value, bool):
        raise AtlasInputError(f"{setting}.{key}: expected true or false, got {value!r}")
    return value


def ladder_settings(base: ExportSettings, ladder: Sequence[Mapping[str, Any]]) -> list[tuple[dict, ExportSettings]]:
    """Each ladder step is a partial override of the configured export (not cumulative)."""
    steps = []
    for i, step in enumerate(ladder):
        if not isinstance(step, Mapping):
            raise AtlasInputError(f"escalation.ladder[{i}]: expected a mapping of export settings, got {step!r}")
        steps.append((dict(step), base.with_overrides(step, f"escalation.ladder[{i}]")))
    return steps
