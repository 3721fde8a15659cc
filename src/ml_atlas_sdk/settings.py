"""The one settings schema both doors validate against: `params.yaml` for the pipeline (checked
once per stage, before it runs) and the SDK's arguments.

Defaults are written here once; conf/ holds the same values (tests/test_settings.py composes it and
compares), so the same inputs give the same bundle by either door. Types are strict: a YAML or
environment string "false" is not a bool, NaN is not a tolerance, an unknown key is a typo.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError,
                      ValidationInfo, field_validator, model_validator)

from ml_atlas_sdk.checks.registry import SkipPolicy
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.metadata import MIN_OPSET, ModelMetadata, in_schema
from ml_atlas_sdk.settings_errors import describe_errors, show_value


def _opset_supported(value: int) -> int:
    if value < MIN_OPSET:
        raise ValueError(f"{value} is below the minimum opset {MIN_OPSET} that atlas accepts")
    return value


def _batch_of_two(value: int) -> int:
    if value < 2:
        raise ValueError(f"{value} is below 2; a batch of 1 lets the exporter specialise the batch axis")
    return value


Tolerance = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
Opset = Annotated[StrictInt, AfterValidator(_opset_supported)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
Share = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
ExportBatch = Annotated[StrictInt, AfterValidator(_batch_of_two)]
DEFAULT_EXPERIMENT = "atlas-bundles"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    key: ClassVar[str] = ""  # where the section sits in params.yaml, for error lines

    @classmethod
    def from_config(cls, raw: Any, where: str | None = None):
        where = cls.key if where is None else where
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise AtlasInputError(describe_errors(exc, cls, where)) from None


class ModelSource(Section):
    """Where the model comes from: `model.factory` (+ kwargs, weights) or a trusted `model.checkpoint`."""

    key: ClassVar[str] = "model"

    name: StrictStr | None = None
    factory: StrictStr | None = None
    kwargs: dict[str, Any] = {}
    weights: StrictStr | None = None
    checkpoint: StrictStr | None = None
    trust_pickle: StrictBool = False
    code_dirs: list[StrictStr] = []

    @field_validator("kwargs", "code_dirs", mode="before")
    @classmethod
    def _none_when_blank(cls, value: Any, info: ValidationInfo) -> Any:
        # `kwargs:` with nothing after it is YAML null, meaning "none", as it always has.
        return ({} if info.field_name == "kwargs" else []) if value is None else value


class DataSettings(Section):
    val_inputs: StrictStr | None = None
    val_outputs: StrictStr | None = None
    calibration_inputs: StrictStr | None = None


class ExportSettings(Section):
    """One export attempt's settings; frozen and hashable, so the ladder can spot duplicates."""

    key: ClassVar[str] = "export"

    opset: Opset = 17
    do_constant_folding: StrictBool = True
    dynamo: StrictBool = False
    batch_size: ExportBatch = 64
    # Weights go to model.onnx.data beside the graph past this size (protobuf's limit is 2 GB); a
    # smaller value exercises the same path on a small model.
    external_data_above_mb: Annotated[float, Field(strict=True, gt=0, le=2048, allow_inf_nan=False)] = 2048

    @classmethod
    def from_used(cls, used: Mapping[str, Any]) -> "ExportSettings":
        """The settings part of a recorded `settings_used` (which also holds step and model opset)."""
        return cls(**{name: used[name] for name in cls.model_fields})

    def with_overrides(self, overrides: Mapping[str, Any], where: str) -> "ExportSettings":
        return ExportSettings.from_config({**self.to_dict(), **overrides}, where)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class LadderStep(Section):
    """A partial `export` override; only the keys given change."""

    opset: Opset | None = None
    do_constant_folding: StrictBool | None = None
    dynamo: StrictBool | None = None
    batch_size: ExportBatch | None = None

    def overrides(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class EscalationSettings(Section):
    enabled: StrictBool = True
    ladder: list[LadderStep] = [LadderStep(opset=18), LadderStep(opset=20), LadderStep(do_constant_folding=False),
                                LadderStep(opset=20, do_constant_folding=False), LadderStep(dynamo=True)]


class OutputTolerance(Section):
    """`roundtrip.tolerances.<output>`: what differs from the global round-trip rule for one output."""

    rtol: Tolerance | None = None
    atol: Tolerance | None = None
    max_nrmse: Tolerance | None = None


class RoundtripSettings(Section):
    rtol: Tolerance = 0.01
    atol: Tolerance = 0.05
    # Scale-aware: RMS error over the outputs' RMS spread across rows (compare.py); a zeroed,
    # constant or frozen output scores >= 1 whatever its magnitude, float noise ~1e-6.
    max_nrmse: Tolerance = 0.01
    tolerances: dict[StrictStr, OutputTolerance] = {}  # per output, over the global rtol/atol/max_nrmse
    batch_size: PositiveInt = 256  # rows per ONNX Runtime / canonical / precision forward run
    localize_rows: Annotated[StrictInt, Field(ge=0)] = 8  # failing rows a failed round-trip is localized on; 0 = never

    @field_validator("tolerances", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @property
    def tolerance(self):
        """The global rule (values inside the network, when a failure is localized)."""
        from ml_atlas_sdk.compare import Tolerance  # numpy only; onnxruntime stays out of settings

        return Tolerance(rtol=self.rtol, atol=self.atol, max_nrmse=self.max_nrmse)

    def tolerances_for(self, output_names: list[str]) -> dict[str, Any]:
        """{output: compare.Tolerance}: each output's own entry over the global values."""
        from ml_atlas_sdk.compare import Tolerance

        base = {"rtol": self.rtol, "atol": self.atol, "max_nrmse": self.max_nrmse}
        return {name: Tolerance(**{**base, **(self.tolerances[name].model_dump(exclude_none=True)
                                             if name in self.tolerances else {})}) for name in output_names}


class DriftSettings(Section):
    tolerance_mse: Tolerance = 0.001
    tolerance_max_abs: Tolerance = 0.05


class PrecisionSettings(Section):
    """FP16 / INT8 readiness (the `precision` stage); its checks only warn."""

    fp16_margin: Annotated[float, Field(strict=True, ge=0, lt=65504, allow_inf_nan=False)] = 16384.0  # 2^14
    fp16_underflow_share: Share = 0.01
    fp16_rtol: Tolerance = 0.01
    fp16_atol: Tolerance = 0.01
    calib_quantile: Annotated[float, Field(strict=True, gt=0, le=1, allow_inf_nan=False)] = 0.999
    calib_max_outside_share: Share = 0.001
    calib_max_quantile_gap: Tolerance = 0.1
    calib_max_unseen_ids_share: Share = 0.01

    @property
    def fp16_tolerance(self):
        from ml_atlas_sdk.compare import Tolerance  # numpy only, as in RoundtripSettings

        return Tolerance(rtol=self.fp16_rtol, atol=self.fp16_atol)


class ChecksSettings(Section):
    skip: StrictBool | list[StrictStr] = []
    calib_min_rows: PositiveInt = 1000
    # {axis name: sizes atlas will serve}: the dynamic_axes check exercises exactly these for that
    # axis instead of its default shorter and longer sizes.
    axis_sizes: dict[StrictStr, list[PositiveInt]] = {}

    @field_validator("axis_sizes", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("skip", mode="before")
    @classmethod
    def _known_checks(cls, value: Any) -> Any:
        try:
            SkipPolicy(value, "")
        except AtlasInputError as exc:
            raise ValueError(str(exc).removeprefix(": ")) from None
        return [] if value is None else value

    @property
    def policy(self) -> SkipPolicy:
        return SkipPolicy(self.skip)


class ArchdocSettings(Section):
    source: StrictStr | None = "auto"  # "auto" | a Markdown file | null (no architecture.md)
    llm_model: StrictStr = "claude-sonnet-4-5"
    cache_dir: StrictStr | None = None


class MlflowSettings(Section):
    tracking_uri: StrictStr = "sqlite:///mlflow.db"
    experiment: StrictStr = Field(min_length=1)  # no default: a deleted line must not push elsewhere
    run_id: StrictStr | None = None
    run_name: StrictStr | None = None
    register_model: StrictStr | None = None

    @field_validator("tracking_uri")
    @classmethod
    def _no_password(cls, uri: str) -> str:
        refuse_uri_password(uri)
        return uri


class UploadSettings(Section):
    dry_run: StrictBool = False


class Settings(Section):
    """Every setting of one run, by section, as in params.yaml."""

    model: ModelSource = ModelSource()
    metadata: ModelMetadata
    data: DataSettings = DataSettings()
    export: ExportSettings = ExportSettings()
    escalation: EscalationSettings = EscalationSettings()
    roundtrip: RoundtripSettings = RoundtripSettings()
    drift: DriftSettings = DriftSettings()
    precision: PrecisionSettings = PrecisionSettings()
    checks: ChecksSettings = ChecksSettings()
    archdoc: ArchdocSettings = ArchdocSettings()
    mlflow: MlflowSettings
    upload: UploadSettings = UploadSettings()
    bundle_schema_version: StrictStr = "1"

    @model_validator(mode="wrap")
    @classmethod
    def _metadata_in_schema(cls, data: Any, handler: Any) -> "Settings":
        with in_schema():  # ModelMetadata's errors as pydantic's, named `metadata.<field>` here
            return handler(data)

    @model_validator(mode="after")
    def _names_known(self) -> "Settings":
        """Settings that name outputs or axes must name ones the metadata declares."""
        unknown = sorted(set(self.roundtrip.tolerances) - set(self.metadata.output_names))
        if unknown:
            raise ValueError(f"roundtrip.tolerances: {unknown} not in metadata.output_names {self.metadata.output_names}")
        axes = self.metadata.probe_axes()
        unknown = sorted(set(self.checks.axis_sizes) - set(axes))
        if unknown:
            raise ValueError(f"checks.axis_sizes: {unknown} not a non-batch dynamic axis of an input in metadata.dynamic_axes "
                             f"(declared: {sorted(axes) or 'none'})")
        return self

    @property
    def roundtrip_tolerances(self) -> dict[str, Any]:
        return self.roundtrip.tolerances_for(self.metadata.output_names)

    @classmethod
    def from_config(cls, raw: Any, where: str | None = None) -> "Settings":
        """Validate the composed config once; any problem is one AtlasInputError line naming the key(s)."""
        if not isinstance(raw, Mapping):
            raise AtlasInputError(f"params: expected a mapping of sections, got {show_value(raw)}")
        return super().from_config(raw, where)

    def export_plan(self) -> tuple[ExportSettings, list[dict[str, Any]]]:
        """The configured export and the ladder steps, the one opset rule applied for both doors:
        metadata.onnx_opset is the lowest opset the bundle may have, export.opset (and each ladder
        step's) the one to try first, so every attempt exports at the higher of the two."""
        floor = self.metadata.onnx_opset
        base = self.export.model_copy(update={"opset": max(self.export.opset, floor)})
        ladder = []
        for step in self.escalation.ladder:
            overrides = step.overrides()
            if "opset" in overrides:
                overrides["opset"] = max(overrides["opset"], floor)
            ladder.append(overrides)
        return base, ladder

    def to_params(self) -> dict[str, Any]:
        """The settings in params.yaml's shape (ladder steps list only the keys they set)."""
        params = self.model_dump(mode="json", exclude={"metadata"})
        params["escalation"]["ladder"] = [step.overrides() for step in self.escalation.ladder]
        return params


def refuse_uri_password(uri: str) -> None:
    """A password inside a tracking URI ends up in params.yaml, Git and shell history."""
    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return  # not a URL MLflow can use either; MLflow reports that itself
    shown = f"{parts.scheme}://***@{host}{parts.path}"  # no userinfo, no query (tokens live there too)
    if parts.scheme in ("http", "https"):
        advice = ("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the "
                  "environment instead, which MLflow reads itself")
    else:
        advice = "give it to the database driver through its own environment (e.g. PGPASSWORD) instead"
    raise ValueError(f"{shown} holds a password; remove it from the URI and {advice}")
