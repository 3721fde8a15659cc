"""Stage archdoc: build/archdoc/architecture.md (Claude, a user's file, or structural), or none."""
from __future__ import annotations

from ml_atlas_sdk.archdoc import build_architecture_doc
from ml_atlas_sdk.pipeline.outputs import begin, read_export_json
from ml_atlas_sdk.pipeline.paths import ARCHDOC, MODEL_SUMMARY, ONNX_MODEL
from ml_atlas_sdk.reports import StageReport
from ml_atlas_sdk.settings import Settings


def run_archdoc(cfg: Settings) -> None:
    begin("archdoc", ARCHDOC.parent)
    archdoc = cfg.archdoc
    summary = read_export_json(MODEL_SUMMARY)  # the export stage's, so torch is not imported here
    doc = build_architecture_doc(summary, ONNX_MODEL, cfg.metadata, archdoc.source, archdoc.llm_model, archdoc.cache_dir)
    ARCHDOC.parent.mkdir(parents=True, exist_ok=True)
    if doc.markdown is not None:
        ARCHDOC.write_text(doc.markdown)
    report = StageReport("archdoc", metrics={"origin": doc.origin}, extra={"reason": doc.reason, "prompt_sha256": doc.prompt_sha256})
    report.write()
    print(f"[archdoc] {doc.origin}" + (f" ({doc.reason})" if doc.reason else ""), flush=True)
