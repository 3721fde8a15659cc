"""ml_atlas_sdk: build, validate and push PyTorch -> ONNX bundles for the atlas optimizer."""
__version__ = "0.1.0"

from ml_atlas_sdk.errors import AtlasBundleError, AtlasInputError  # noqa: E402
from ml_atlas_sdk.metadata import ModelMetadata  # noqa: E402
from ml_atlas_sdk.tensors import write_frame  # noqa: E402

_LAZY = {"AtlasArtifactBundle": "ml_atlas_sdk.sdk", "push_to_mlflow": "ml_atlas_sdk.sdk", "resolve": "ml_atlas_sdk.consumer",
         "infer_metadata": "ml_atlas_sdk.onboarding.notebook"}


def __getattr__(name: str):
    # The SDK door and the consumer pull in MLflow and the exporters: import them on first use.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ml_atlas_sdk' has no attribute {name!r}")


__all__ = ["AtlasArtifactBundle", "AtlasBundleError", "AtlasInputError", "ModelMetadata", "__version__", "infer_metadata",
           "push_to_mlflow", "resolve", "write_frame"]
