"""The notebook door's `infer_metadata`: what `atlas-bundle init` would write, from objects in memory."""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.build import sdk_argument
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.models import canonical_model
from ml_atlas_sdk.onboarding.command import propose_metadata

if TYPE_CHECKING:
    import pandas as pd
    import torch


class ProposedMetadata(NamedTuple):
    metadata: ModelMetadata
    review: list[str]  # what init lists at the top of the metadata file: guesses to check


def infer_metadata(model: "torch.nn.Module", val_inputs_df: "pd.DataFrame", model_name: str | None = None, *,
                   val_outputs_df: "pd.DataFrame | None" = None, calibration_inputs_df: "pd.DataFrame | None" = None,
                   output_names: list[str] | None = None, architecture: str | None = None,
                   task_type: str | None = None) -> ProposedMetadata:
    """The ModelMetadata `atlas-bundle init` infers for `model` from the same data (forward's
    signature, the data's shapes and padding, forward passes), and its review list.

    `model` is put in eval mode on CPU in float32, as `push_to_mlflow` does. `model_name` defaults to
    the class name. Errors are the one-line AtlasInputError init prints, naming the `*_df` argument.
    """
    frames = {"val_inputs": val_inputs_df, "val_outputs": val_outputs_df, "calibration_inputs": calibration_inputs_df}
    tables = {key: (tio.frame_to_table(df), sdk_argument(key)) for key, df in frames.items()
              if df is not None}
    model = canonical_model(model)
    inferred, review = propose_metadata(model, tables, model_name or type(model).__name__, output_names=output_names,
                                        architecture=architecture, task_type=task_type)
    return ProposedMetadata(inferred.metadata, review)
