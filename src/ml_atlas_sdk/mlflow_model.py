"""The accepted ONNX as an MLflow model (onnx flavor) beside the bundle, optionally registered."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.mlflow_store import MODEL_ARTIFACT_PATH  # noqa: F401 (mlflow_store clears it on a re-upload)
EXAMPLE_ROWS = 2


def signature_for(meta: ModelMetadata, val_inputs: dict[str, np.ndarray], val_outputs: dict[str, np.ndarray]):
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def specs(names, shapes, tensors):
        return Schema([TensorSpec(np.dtype(tensors[n].dtype), tuple(shapes[n]), n) for n in names])

    return ModelSignature(
        inputs=specs(meta.input_names, meta.input_shapes, val_inputs),
        outputs=specs(meta.output_names, meta.output_shape, val_outputs),
    )


def log_onnx_model(client, run_id: str, onnx_path: Path, meta: ModelMetadata,
                   val_inputs: dict[str, np.ndarray], val_outputs: dict[str, np.ndarray]) -> str:
    """Save with mlflow.onnx.save_model and upload through the client: no fluent/global run state."""
    import mlflow.onnx

    example = {n: np.array(val_inputs[n][:EXAMPLE_ROWS]) for n in meta.input_names}
    with tempfile.TemporaryDirectory(prefix="atlas-mlflow-model-") as tmp:
        local = Path(tmp) / MODEL_ARTIFACT_PATH
        mlflow.onnx.save_model(
            onnx.load(str(onnx_path)), str(local), signature=signature_for(meta, val_inputs, val_outputs),
            input_example=example, save_as_external_data=onnx_path.with_name(f"{onnx_path.name}.data").is_file(),
            # The flavor's own pins (onnx, onnxruntime): inferring them loads the model in a
            # subprocess to watch its imports, 2.3 s of every upload for the same two lines.
            pip_requirements=mlflow.onnx.get_default_pip_requirements(),
        )
        client.log_artifacts(run_id, str(local), MODEL_ARTIFACT_PATH)
    return f"runs:/{run_id}/{MODEL_ARTIFACT_PATH}"


def register(client, name: str, run_id: str) -> str:
    """Create the registry entry if needed and add this run's model as a new version."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    source = f"{client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT_PATH}"
    return client.create_model_version(name, source, run_id=run_id).version
