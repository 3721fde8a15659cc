"""Stage tensorize: data.* tables -> build/tensors/<stem>.pt, with the data checks (read batch by batch)."""
from __future__ import annotations

from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.build import DATA_FILES, tensor_file
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.pipeline.outputs import begin, finish, replaced_dir
from ml_atlas_sdk.pipeline.paths import TENSORS_DIR
from ml_atlas_sdk.settings import Settings
from ml_atlas_sdk.steps.tensorize import tensorize


def run_tensorize(cfg: Settings) -> None:
    begin("tensorize", TENSORS_DIR)
    data = cfg.data.model_dump()
    if not data["val_inputs"]:
        raise AtlasInputError("data.val_inputs: required, got nothing")
    tables = {
        stem: (tio.open_table(data[key], f"data.{key}"), str(data[key]))
        for key, stem in DATA_FILES.items()
        if data[key]
    }
    result = tensorize(tables, cfg.metadata, cfg.checks.policy, cfg.checks.calib_min_rows)
    with replaced_dir(TENSORS_DIR) as out:
        for stem, tensors in result.tensors.items():
            tio.save_tensors(tensors, out / tensor_file(stem))
    finish(result.report)
