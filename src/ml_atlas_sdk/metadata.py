"""ModelMetadata: the I/O contract atlas builds engines from, validated up front."""
from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ml_atlas_sdk.dtypes import SUPPORTED_DTYPES
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.provenance import distribution_version

MIN_OPSET = 17

DynamicAxes = dict[str, dict[int, str] | list[int]]

# Names become ONNX value names, file names (roundtrip/drift plot CSVs, tensor keys) and MLflow
# keys (params, metrics `roundtrip.<output>.*`): the intersection of what those allow, so a name
# can never escape a folder or fail late at MLflow's key check after a run was created.
SAFE_NAME = re.compile(r"[A-Za-z0-9_.\- ]{1,200}")
NAME_RULE = ("names become ONNX value names, file names and MLflow keys: 1-200 letters, digits, '_', '-', '.' "
             "or spaces, and not '.' or '..'")


_IN_SCHEMA: contextvars.ContextVar[bool] = contextvars.ContextVar("atlas_metadata_in_schema", default=False)


@contextlib.contextmanager
def in_schema() -> Iterator[None]:
    """ModelMetadata validated as part of a larger schema: keep pydantic's errors (see __init__)."""
    token = _IN_SCHEMA.set(True)
    try:
        yield
    finally:
        _IN_SCHEMA.reset(token)


def name_problem(name: object) -> str | None:
    """Why `name` is not a safe input, output, model or axis name (None: it is)."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or name.strip(" ") in (".", "..", ""):
        return f"{name!r} is not a safe name ({NAME_RULE})"
    return None


class ModelMetadata(BaseModel):
    """Metadata of one model; shapes include the batch axis and use -1 for every dynamic dim."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model_name: str  # non-empty and safe: _model_name_safe
    input_names: list[str] = Field(min_length=1)
    output_names: list[str] = Field(min_length=1)
    input_shapes: dict[str, list[int]]
    output_shape: dict[str, list[int]]
    dynamic_axes: DynamicAxes
    onnx_opset: int = 17
    architecture: str = ""
    task_type: str = ""
    input_dtypes: dict[str, str] | None = None
    torch_version: str = Field(default_factory=lambda: distribution_version("torch") or "")  # no torch import

    def __init__(self, **data: Any):
        # Built by hand in a notebook (the SDK door): one line naming the field, not pydantic's block.
        # Validated inside a schema (Settings' `metadata`, from_config), pydantic also runs this
        # __init__; there its own error must pass through, so the schema's lines name `metadata.<field>`.
        if _IN_SCHEMA.get() or type(self) is not ModelMetadata:
            super().__init__(**data)
            return
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise AtlasInputError(format_validation_error(exc, "ModelMetadata")) from None

    @field_validator("model_name")
    @classmethod
    def _model_name_safe(cls, v: str) -> str:
        if problem := name_problem(v):
            raise ValueError(problem)
        return v

    @field_validator("input_names", "output_names")
    @classmethod
    def _names_safe(cls, names: list[str]) -> list[str]:
        for name in names:
            if problem := name_problem(name):
                raise ValueError(problem)
        return names

    @field_validator("onnx_opset")
    @classmethod
    def _opset_supported(cls, v: int) -> int:
        if v < MIN_OPSET:
            raise ValueError(f"{v} is below the minimum opset {MIN_OPSET} that atlas accepts")
        return v

    @field_validator("input_shapes", "output_shape")
    @classmethod
    def _dims_valid(cls, shapes: dict[str, list[int]]) -> dict[str, list[int]]:
        for name, shape in shapes.items():
            if not shape:
                raise ValueError(f"{name!r} has an empty shape; it must include the batch axis")
            bad = [d for d in shape if d == 0 or d < -1]
            if bad:
                raise ValueError(f"{name!r} shape {shape}: use -1 for dynamic dims and positive ints for static ones")
        return shapes

    @field_validator("input_dtypes")
    @classmethod
    def _dtypes_known(cls, dtypes: dict[str, str] | None) -> dict[str, str] | None:
        for name, dtype in (dtypes or {}).items():
            if dtype not in SUPPORTED_DTYPES:
                raise ValueError(f"{name!r}: dtype {dtype!r} is not one of {list(SUPPORTED_DTYPES)}")
        return dtypes

    @model_validator(mode="after")
    def _consistent(self) -> "ModelMetadata":
        io_names = [*self.input_names, *self.output_names]
        dupes = sorted({n for n in io_names if io_names.count(n) > 1})
        if dupes:
            raise ValueError(f"names used twice among inputs and outputs: {dupes}")
        _same_keys("input_shapes", self.input_shapes, self.input_names, "input_names")
        _same_keys("output_shape", self.output_shape, self.output_names, "output_names")
        if self.input_dtypes is not None:
            extra = sorted(set(self.input_dtypes) - set(self.input_names))
            if extra:
                raise ValueError(f"input_dtypes names {extra} are not in input_names {self.input_names}")
        for name in self.dynamic_axes:
            if name not in io_names:
                raise ValueError(
                    f"dynamic_axes names {name!r}, which is neither an input nor an output "
                    f"(inputs {self.input_names}, outputs {self.output_names})"
                )
        shapes = {**self.input_shapes, **self.output_shape}
        for name in io_names:
            axes = self.axes_of(name)
            for axis, dim in axes.items():
                if problem := name_problem(dim):
                    raise ValueError(f"dynamic_axes[{name!r}][{axis}]: {problem}")
            if 0 not in axes:
                raise ValueError(f"dynamic_axes[{name!r}] must list axis 0 (the batch axis); got {sorted(axes)}")
            shape = shapes[name]
            marked = {i for i, d in enumerate(shape) if d == -1}
            out_of_range = sorted(a for a in axes if a >= len(shape))
            if out_of_range:
                raise ValueError(f"dynamic_axes[{name!r}] lists axes {out_of_range} beyond the rank of shape {shape}")
            if marked != set(axes):
                raise ValueError(
                    f"{name!r}: dims marked -1 in shape {shape} are axes {sorted(marked)}, "
                    f"but dynamic_axes lists {sorted(axes)}; they must agree"
                )
        return self

    def axes_of(self, name: str) -> dict[int, str]:
        """Dynamic axes of one I/O as {axis: dim name}, whether given as a dict or a list."""
        raw = self.dynamic_axes.get(name, {})
        if isinstance(raw, list):
            return {int(a): f"{name}_dynamic_axes_{a}" for a in raw}
        return {int(a): str(n) for a, n in raw.items()}

    def probe_axes(self) -> dict[str, list[tuple[str, int]]]:
        """Non-batch dynamic axes that inputs carry, by dim name: {name: [(input, axis), ...]}.
        Inputs that share a name change together; an axis only outputs carry cannot be driven."""
        return self._named_axes(self.input_names)

    def output_axes(self) -> dict[str, list[tuple[str, int]]]:
        """The same for outputs: the axes that must follow an input axis of the same name."""
        return self._named_axes(self.output_names)

    def _named_axes(self, names: list[str]) -> dict[str, list[tuple[str, int]]]:
        found: dict[str, list[tuple[str, int]]] = {}
        for name in names:
            for axis, dim in sorted(self.axes_of(name).items()):
                if axis != 0:
                    found.setdefault(dim, []).append((name, axis))
        return found

    @property
    def dtype_of(self) -> dict[str, str]:
        return dict(self.input_dtypes or {})

    @classmethod
    def from_config(cls, raw: dict[str, Any], where: str = "metadata") -> "ModelMetadata":
        """Build from a plain dict, turning validation errors into one readable line."""
        try:
            with in_schema():
                return cls.model_validate(raw)
        except ValidationError as exc:
            raise AtlasInputError(format_validation_error(exc, where)) from None


class BundleMetadata(ModelMetadata):
    """metadata.json in a bundle: the I/O contract plus what the producer adds beside it (SPEC).

    The one schema both sides use: the producer writes through it, the consumer reads through it,
    so a key one side adds and the other does not know fails here rather than being dropped.
    The bundle-only keys are optional: a bundle written before one existed still reads.
    """

    export: dict[str, Any] | None = None  # export settings actually used (opset, dynamo, ladder step)
    versions: dict[str, str] | None = None  # sdk, torch, onnx, onnxruntime
    source: dict[str, Any] | None = None  # git commit, dirty flag, dvc.lock hash
    bundle_schema_version: str | None = None
    precision_hints: dict[str, list[str]] | None = None  # modules / ONNX nodes to keep in FP32
    # tolerances per output, drift tolerances, dynamic-axis sizes exercised, skipped checks (validated_under.py)
    validated_under: dict[str, Any] | None = None

    @classmethod
    def document(
        cls, meta: ModelMetadata, export: dict[str, Any], versions: dict[str, str], source: dict[str, Any],
        bundle_schema_version: str, precision_hints: dict[str, list[str]] | None = None,
        validated_under: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON document the producer writes (no precision_hints key unless there are any)."""
        doc = cls(**meta.model_dump(), export=export, versions=versions, source=source,
                  bundle_schema_version=bundle_schema_version, precision_hints=precision_hints,
                  validated_under=validated_under)
        return doc.model_dump(mode="json", exclude=None if precision_hints else {"precision_hints"})


def _same_keys(field: str, shapes: dict[str, Any], names: list[str], names_field: str) -> None:
    if set(shapes) != set(names):
        missing = sorted(set(names) - set(shapes))
        extra = sorted(set(shapes) - set(names))
        raise ValueError(f"{field} keys must equal {names_field}: missing {missing}, not in {names_field} {extra}")


def format_validation_error(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}.{loc}: {msg}" if loc else f"{where}: {msg}")
    return "; ".join(parts)
