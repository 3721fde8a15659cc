"""Comparing settings with `dvc exp`, and params.yaml staying the composition of conf/."""
from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

import yaml

from conftest import REPO_ROOT, project_env, run
from sdk_helpers import demo_model
from ml_atlas_sdk.pipeline.params import compose_params, main as params_main


def experiments_by_name(project: Path) -> dict[str, dict]:
    """`dvc exp show --json` flattened to {experiment name: its data (params, metrics)}."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    found = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                found[rev["name"]] = rev["data"]
    return found


def params_of(data: dict) -> dict:
    return data["params"]["params.yaml"]["data"]


def metrics_of(data: dict, stage: str) -> dict:
    return data["metrics"][f"reports/{stage}.json"]["data"]


def readme_exp_show_command() -> list[str]:
    """The comparison command the README documents, so the test runs what users read."""
    (line,) = [ln for ln in (REPO_ROOT / "README.md").read_text().splitlines() if ln.startswith("dvc exp show --only-changed")]
    return shlex.split(line.split("  #")[0])


def test_make_compare_is_the_readme_command():
    """`make compare` is the short form of the README's comparison command, the same words."""
    dry = run(["make", "-n", "compare", "VENV=.venv"], REPO_ROOT).stdout.splitlines()
    assert any(shlex.split(line.split("PATH=", 1)[-1].split(" ", 1)[-1]) == readme_exp_show_command() for line in dry), dry


def test_exp_run_compares_settings_by_verdicts_and_metrics(project):
    ok = run(["dvc", "exp", "run", "-n", "opset18", "-S", "export.opset=18", "roundtrip"], project)
    assert "Running stage 'upload'" not in ok.stdout  # a stage target: experiments never push
    workspace_roundtrip = json.loads((project / "reports" / "roundtrip.json").read_text())
    # Zero tolerance fails the round-trip (every ladder step too): the check stages still exit 0 and
    # record the failure, so the failing settings appear in the comparison with their metrics.
    run(["dvc", "exp", "run", "-n", "strict", "-S", "roundtrip.atol=0", "-S", "roundtrip.rtol=0", "roundtrip"], project)

    exps = experiments_by_name(project)
    assert len(exps) == 2
    opset18 = next(d for d in exps.values() if params_of(d)["export"]["opset"] == 18)
    strict = next(d for d in exps.values() if params_of(d)["roundtrip"]["atol"] == 0)

    assert params_of(opset18)["roundtrip"]["atol"] == 0.05
    assert metrics_of(opset18, "roundtrip")["verdicts"] == {"roundtrip": "passed", "dynamic_axes": "passed"}
    assert metrics_of(opset18, "roundtrip")["metrics"] == workspace_roundtrip["metrics"]
    assert metrics_of(opset18, "roundtrip")["metrics"]["rows"] == 512
    assert metrics_of(opset18, "export")["settings_used"]["opset"] == 18  # the stage really used it

    assert params_of(strict)["export"]["opset"] == 17
    # Wrong at the data's own sizes: the other sizes of seq_len are not probed.
    assert metrics_of(strict, "roundtrip")["verdicts"] == {"roundtrip": "failed", "dynamic_axes": "skipped"}
    outputs = metrics_of(strict, "roundtrip")["metrics"]["outputs"]
    assert set(outputs) == {"ctr", "logits"}
    assert max(m["frac_out_of_tol"] for m in outputs.values()) > 0
    assert metrics_of(strict, "export")["metrics"]["accepted"] is False
    assert metrics_of(strict, "export")["metrics"]["attempts"] == 6  # the whole ladder was tried
    # The failed round-trip is localized (in the export stage's attempts too); the passing one is not.
    localized = metrics_of(strict, "roundtrip")["localization"]
    assert localized["status"] == "found" and localized["first_divergence"]["module"] in dict(demo_model().named_modules())
    assert 0 < metrics_of(strict, "roundtrip")["metrics"]["localization_seconds"] < 10
    strict_export = json.loads((project / "reports" / "export.json").read_text())  # the last experiment's, in the workspace
    assert all(a["localization"]["status"] == "found" for a in strict_export["attempts"])
    assert metrics_of(opset18, "roundtrip")["localization"]["status"] == "not_run"

    # The README's comparison fits a 120-column terminal: one row per experiment with its changed
    # settings, accepted step, round-trip verdict and worst error, nothing cut to "…".
    shown = run([*readme_exp_show_command(), "--no-pager"], project, env=project_env({"COLUMNS": "120"})).stdout
    lines = shown.splitlines()
    assert lines and max(len(ln) for ln in lines) <= 120, shown
    assert "…" not in shown, shown
    header = next(ln for ln in lines if "Experiment" in ln).split()
    assert header[1:4] == ["step", "verdict", "worst_err"], shown
    assert {"export.opset", "roundtrip.atol", "roundtrip.rtol"} <= set(header), shown
    rows = {name: ln.split() for name in ("opset18", "strict") for ln in lines if f"[{name}]" in ln}

    def cell(experiment: str, column: str) -> str:  # a row is "├── <sha> [<name>]" then one cell per column
        return rows[experiment][header.index(column) + 2]

    assert cell("opset18", "verdict") == "passed" and cell("opset18", "export.opset") == "18"
    assert cell("strict", "verdict") == "failed" and cell("strict", "roundtrip.atol") == "0"

    # `-S` overrides the Hydra composition, not the committed conf/.
    assert run(["git", "status", "--porcelain", "conf"], project).stdout == ""


def test_params_yaml_equals_composition_of_conf(tmp_path):
    fresh = compose_params(REPO_ROOT, tmp_path / "params.yaml")
    assert fresh.read_bytes() == (REPO_ROOT / "params.yaml").read_bytes(), "params.yaml is stale: run `make params`"


def test_params_command_takes_hydra_overrides(tmp_path, monkeypatch, capsys):
    shutil.copytree(REPO_ROOT / "conf", tmp_path / "conf")
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    overrides = ["export.opset=18", "escalation.enabled=false"]
    monkeypatch.chdir(tmp_path)

    assert params_main(["--check"]) == 0
    assert params_main(["--check", *overrides]) == 1
    assert "make params" in capsys.readouterr().err

    # The documented command line, as `make params` runs it.
    run([sys.executable, "-m", "ml_atlas_sdk.pipeline.params", *overrides], tmp_path)
    written = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert written["export"]["opset"] == 18 and written["escalation"]["enabled"] is False
    assert written["export"]["do_constant_folding"] is True  # the rest still comes from conf/
    assert params_main(["--check", *overrides]) == 0
    assert params_main(["--check"]) == 1
