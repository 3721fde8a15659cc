"""ml_atlas_sdk: build, validate and push PyTorch -> ONNX bundles for the atlas optimizer."""
__version__ = "0.1.0"

from ml_atlas_sdk.errors import AtlasBundleError, AtlasInputError  # noqa: E402
from ml_atlas_sdk.metadata import ModelMetadata  # noqa: E402
from ml_atlas_sdk.tensors import write_frame  # noqa: E402

__all__ = ["AtlasBundleError", "AtlasInputError", "ModelMetadata", "__version__", "write_frame"]
