"""Where the stages put things; dvc.yaml declares the same paths."""
from pathlib import Path

from ml_atlas_sdk.build import VAL_INPUTS, VAL_OUTPUTS, tensor_file

BUILD = Path("build")
TENSORS_DIR = BUILD / "tensors"
VAL_INPUTS_FILE = TENSORS_DIR / tensor_file(VAL_INPUTS)
CANONICAL_OUTPUTS = BUILD / "canonical" / tensor_file(VAL_OUTPUTS)
ONNX_MODEL = BUILD / "onnx" / "model.onnx"
EXPORT_INFO = BUILD / "onnx" / "export_info.json"  # settings actually used, export sample rows
MODEL_SUMMARY = BUILD / "onnx" / "model_summary.json"  # repr and parameter counts, for archdoc (no torch there)
AXIS_OUTPUTS = BUILD / "onnx" / "axis_outputs.npz"  # eager and ORT outputs at the dynamic-axis probe sizes
ORT_OUTPUTS = BUILD / "onnx" / "ort_outputs.pt"  # ORT's outputs of model.onnx, reused by the roundtrip stage
REPORTS = Path("reports")
PLOTS = REPORTS / "plots"
ARCHDOC = BUILD / "archdoc" / "architecture.md"
BUNDLE_ROOT = BUILD / "bundle"
