"""The demo pipeline through roundtrip in a fresh git repo, with real DVC."""
import json

from conftest import run


def test_repro_roundtrip_passes_and_second_run_is_a_noop(project):
    first = run(["dvc", "repro", "roundtrip"], project)
    assert "Running stage 'export'" in first.stdout
    report = json.loads((project / "reports" / "roundtrip.json").read_text())
    assert report["verdicts"]["roundtrip"] == "passed"
    assert report["metrics"]["rows"] == 512
    assert report["metrics"]["ort_outputs_reused"] is True  # ORT ran over the rows once, in export
    second = run(["dvc", "repro", "roundtrip"], project)
    assert "Running stage" not in second.stdout
    status = run(["dvc", "status", "roundtrip"], project)
    assert "up to date" in status.stdout
