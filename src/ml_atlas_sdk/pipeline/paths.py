"""Where the stages put things; dvc.yaml declares the same paths."""
from pathlib import Path

BUILD = Path("build")
TENSORS_DIR = BUILD / "tensors"
CANONICAL_OUTPUTS = BUILD / "canonical" / "val_outputs.pt"
ONNX_MODEL = BUILD / "onnx" / "model.onnx"
EXPORT_INFO = BUILD / "onnx" / "export_info.json"  # settings actually used, export sample rows
REPORTS = Path("reports")
PLOTS = REPORTS / "plots"
ARCHDOC = BUILD / "archdoc" / "architecture.md"
BUNDLE_ROOT = BUILD / "bundle"
# Stages whose check results the upload gate reads, in pipeline order.
CHECK_STAGES = ("tensorize", "canonical_outputs", "export", "roundtrip", "invariance", "drift")
