"""`atlas-bundle init NAME --factory ... --val-inputs ...`: build the model once, infer its metadata,
check the data the way the tensorize stage will, write the three conf files and switch to them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.build import DATA_FILES
from ml_atlas_sdk.checks import SkipPolicy, Verdict
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.models import canonical_model, load_model
from ml_atlas_sdk.onboarding.conf_files import (conf_paths, overrides, recompose, refuse_existing, switched_config,
                                               write_conf, write_config)
from ml_atlas_sdk.onboarding.infer import Inferred, infer_metadata
from ml_atlas_sdk.settings import ChecksSettings, DataSettings, ModelSource
from ml_atlas_sdk.steps.tensorize import tensorize

CODE_DIR = "models"  # the project's folder for model code that is not installed (models/README.md)


@dataclass
class InitRequest:
    name: str
    val_inputs: str
    factory: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    checkpoint: str | None = None
    trust_pickle: bool = False
    code_dirs: list[str] | None = None  # None: models/ when the factory's module lives there
    val_outputs: str | None = None
    calibration_inputs: str | None = None
    output_names: list[str] | None = None
    architecture: str | None = None
    task_type: str | None = None
    force: bool = False
    switch: bool = True


def init_model(request: InitRequest, root: Path) -> None:
    paths = conf_paths(root, request.name)
    if not request.force:
        refuse_existing(paths, root)
    notes: list[str] = []
    files = {key: _in_project(getattr(request, key), f"--{key.replace('_', '-')}", root, notes)
             for key in ("weights", "checkpoint", "val_inputs", "val_outputs", "calibration_inputs")}
    source = ModelSource.from_config({
        "name": request.name, "factory": request.factory, "kwargs": request.kwargs, "weights": files["weights"],
        "checkpoint": files["checkpoint"], "trust_pickle": request.trust_pickle,
        "code_dirs": _code_dirs(request, root, notes),
    })
    model = canonical_model(load_model(source))
    tables = {key: (tio.read_table(files[key], f"--{key.replace('_', '-')}"), files[key])
              for key in DATA_FILES if files[key]}
    inferred, review = propose_metadata(model, tables, request.name, output_names=request.output_names,
                                        architecture=request.architecture, task_type=request.task_type)
    notes += review
    data = DataSettings.from_config({key: files[key] for key in DATA_FILES}, "data")
    sections = {"model": source.model_dump(), "data": data.model_dump(),
                "metadata": inferred.metadata.model_dump(exclude={"torch_version"})}
    config = switched_config(root, request.name) if request.switch else None
    written = (f"Written by `atlas-bundle init {request.name}` from {request.factory or files['checkpoint']} and "
               f"{files['val_inputs']}.")
    write_conf(paths, sections, {"model": [written], "data": [written], "metadata": [written, *_review_lines(notes)]})
    if config is not None:
        write_config(root, config)
    recompose(root, request.name, request.switch)
    _print_summary(request, inferred, paths, root, notes)


def propose_metadata(model, tables: dict, name: str, *, output_names: list[str] | None = None,
                     architecture: str | None = None, task_type: str | None = None) -> tuple[Inferred, list[str]]:
    """What init and the SDK's `infer_metadata` share: the metadata read from forward and
    `tables` ({data key: (Arrow table, where it came from)}), checked by the tensorize step on
    every file, and the notes to review. `model` in canonical form."""
    reference = tables["val_outputs"][0].column_names if "val_outputs" in tables else None
    table, where = tables["val_inputs"]
    inferred = infer_metadata(model, table, where, name, output_names=output_names, reference_columns=reference,
                              architecture=architecture, task_type=task_type)
    return inferred, inferred.notes + _as_tensorize_sees_it(tables, inferred)


def _as_tensorize_sees_it(tables: dict, inferred: Inferred) -> list[str]:
    """Run the tensorize step on every file with the inferred metadata: what init writes is what
    the pipeline accepts, and a reference or calibration file that disagrees is refused here."""
    stems = {DATA_FILES[key]: table for key, table in tables.items()}
    result = tensorize(stems, inferred.metadata, SkipPolicy([]), ChecksSettings().calib_min_rows)
    failed = [c for c in result.report.checks if c.name == "df_shape_dtype" and c.verdict is Verdict.FAILED]
    if failed:
        raise AtlasInputError(f"{stems[failed[0].subject][1]} disagrees with the metadata inferred from forward and "
                              f"--val-inputs: {failed[0].message}")
    return [f"{c.label} {c.verdict.value}: {c.message}" for c in result.report.checks
            if c.verdict in (Verdict.WARNED, Verdict.FAILED)]


def _in_project(path: str | None, option: str, root: Path, notes: list[str]) -> str | None:
    """The path relative to the project root, which is how conf/ names files for DVC."""
    if path is None:
        return None
    full = (root / path).resolve()
    try:
        relative = full.relative_to(root.resolve())
    except ValueError:
        raise AtlasInputError(f"{option}: {path} is outside the project {root}; copy it under data/, which DVC "
                              "tracks") from None
    if relative.parts[:1] != ("data",):
        notes.append(f"{option} {relative} is outside data/: DVC reruns the stages when files under data/ change")
    return relative.as_posix()


def _code_dirs(request: InitRequest, root: Path, notes: list[str]) -> list[str]:
    if request.code_dirs is not None:  # dvc.yaml digests each one, which DVC allows only inside the project
        return [_in_project(d, "--code-dir", root, []) for d in request.code_dirs]
    module = (request.factory or "").partition(":")[0].split(".")[0]
    if module and ((root / CODE_DIR / f"{module}.py").is_file() or (root / CODE_DIR / module).is_dir()):
        notes.append(f"model.code_dirs: [{CODE_DIR}], where the factory's module {module!r} lives")
        return [CODE_DIR]
    return []


def _review_lines(notes: list[str]) -> list[str]:
    return ["", "Review before `dvc repro`:", *(f"  - {n}" for n in notes)] if notes else []


def _print_summary(request: InitRequest, inferred: Inferred, paths: dict[str, Path], root: Path,
                   notes: list[str]) -> None:
    meta, rows_read = inferred.metadata, next(iter(inferred.inputs.tensors.values())).shape[0]
    table = [("", "name", "dtype", "shape", "dynamic axes")]
    for kind, names, shapes, dtypes in (("input", meta.input_names, meta.input_shapes, meta.dtype_of),
                                        ("output", meta.output_names, meta.output_shape, inferred.outputs.dtypes)):
        for name in names:
            axes = ", ".join(f"{a}: {d}" for a, d in meta.axes_of(name).items())
            table.append((kind, name, dtypes[name], str(shapes[name]), axes))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    print(f"atlas-bundle init {request.name}: {meta.architecture} from {request.factory or request.checkpoint}, "
          f"{rows_read} rows of {request.val_inputs}")
    for row in table:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print("wrote " + ", ".join(str(p.relative_to(root)) for p in paths.values()))
    if request.switch:
        print(f"conf/config.yaml's defaults now pick {request.name} for model, metadata and data; params.yaml recomposed")
    else:
        flags = " ".join(f"-S {o}" for o in overrides(request.name))
        print(f"conf/config.yaml unchanged (--no-switch): try it with `dvc exp run {flags}`, or point the defaults "
              f"at {request.name} and run `make params`")
    if notes:
        print("review (also listed at the top of the metadata file):")
        for note in notes:
            print(f"  - {note}")
    print("then: `dvc repro`, and commit conf/, params.yaml, dvc.lock and reports/ (README: What to commit)")
