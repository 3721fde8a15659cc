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
    """Save with mlflow.onnx.save_model and upload through the client (no fluent/global run state);
    returns the model's URI. On MLflow 3 it is the run's logged model (the UI lists it under
    "Logged models", registrable from there; `runs:/<run>/model` still resolves to it), on MLflow 2
    the run's `model/` folder."""
    import mlflow.onnx
    from mlflow.models import Model

    logged = _create_logged_model(client, run_id)
    example = {n: np.array(val_inputs[n][:EXAMPLE_ROWS]) for n in meta.input_names}
    with tempfile.TemporaryDirectory(prefix="atlas-mlflow-model-") as tmp:
        local = Path(tmp) / MODEL_ARTIFACT_PATH
        mlflow.onnx.save_model(
            onnx.load(str(onnx_path)), str(local), signature=signature_for(meta, val_inputs, val_outputs),
            input_example=example, save_as_external_data=onnx_path.with_name(f"{onnx_path.name}.data").is_file(),
            # The flavor's own pins (onnx, onnxruntime): inferring them loads the model in a
            # subprocess to watch its imports, 2.3 s of every upload for the same two lines.
            pip_requirements=mlflow.onnx.get_default_pip_requirements(),
            mlflow_model=Model(run_id=run_id, **({"model_id": logged.model_id, "artifact_path": logged.artifact_location}
                                                 if logged else {})),
        )
        if logged is None:
            client.log_artifacts(run_id, str(local), MODEL_ARTIFACT_PATH)
            return f"runs:/{run_id}/{MODEL_ARTIFACT_PATH}"
        from mlflow.entities import LoggedModelStatus

        client.log_model_artifacts(logged.model_id, str(local))
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return f"models:/{logged.model_id}"


def logged_models_of(client, run_id: str) -> list:
    """The run's logged models named like ours (MLflow 3; [] before it)."""
    if not hasattr(client, "search_logged_models"):
        return []
    experiment_id = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models(experiment_ids=[experiment_id], filter_string=f"name = '{MODEL_ARTIFACT_PATH}'")
    return [m for m in found if m.source_run_id == run_id]


def _create_logged_model(client, run_id: str):
    if not hasattr(client, "create_logged_model"):  # MLflow 2
        return None
    from mlflow.entities import LoggedModelOutput

    run = client.get_run(run_id)
    logged = client.create_logged_model(run.info.experiment_id, name=MODEL_ARTIFACT_PATH, source_run_id=run_id,
                                        params=dict(run.data.params), model_type="onnx")
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    return logged


def register(client, name: str, run_id: str, model_uri: str) -> str:
    """Create the registry entry if needed and add this run's model as a new version."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    if model_uri.startswith("models:/"):
        return client.create_model_version(name, model_uri, run_id=run_id, model_id=model_uri[len("models:/"):]).version
    source = f"{client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT_PATH}"
    return client.create_model_version(name, source, run_id=run_id).version
