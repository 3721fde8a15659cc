"""Secrets never leak: the helpers, the Anthropic key's partial echoes, and a whole pipeline run greped."""
from __future__ import annotations


import pytest

from conftest import make_project_copy, project_env, run, set_params
from fake_anthropic import FakeAnthropic
from ml_atlas_sdk.bundle import BUNDLE_DIR_NAME, build_manifest
from ml_atlas_sdk.mlflow_store import push_bundle
from ml_atlas_sdk.secrets import MIN_ECHO, first_line, redact_uri, scrub
from servers import free_port, mlflow_server

PASSWORD = "PW-Secret-7f3a9c"
KEY = "sk-ant-api03-Zq8xY7wV6uT5sR4qP3oN2mL1kJ0-hG9fE8dC7bA6"


def _echoes(text: str, secret: str) -> list[str]:
    """Every MIN_ECHO-long piece of `secret` found in `text`."""
    return [secret[i:i + MIN_ECHO] for i in range(len(secret) - MIN_ECHO + 1) if secret[i:i + MIN_ECHO] in text]


def test_scrub_removes_uri_credentials_even_unasked():
    uri = f"http://atlas:{PASSWORD}@mlflow.internal:5000"
    text = f"API request to {uri}/api/2.0/mlflow/runs/get failed; password {PASSWORD} rejected"
    assert scrub(text, uri) == "API request to http://mlflow.internal:5000/api/2.0/mlflow/runs/get failed; password *** rejected"
    # No secret given: userinfo in any URL and credential query parameters still go.
    assert scrub("see https://u:p@h/x?token=abc&a=1 and s3://b/k?X-Amz-Signature=ff") == \
        "see https://h/x?token=***&a=1 and s3://b/k?X-Amz-Signature=***"
    assert redact_uri("http://u:p%40ss@h:1/p?token=t") == "http://h:1/p"


def test_scrub_masks_partial_echoes_of_a_key_and_anything_like_an_anthropic_key(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    text = f"bad key '{KEY[:10]}...{KEY[-9:]}' (middle {KEY[20:28]}), unrelated {KEY[30:37]}"
    out = scrub(text, KEY)
    assert _echoes(out, KEY) == [] and KEY[30:37] in out  # 7 characters: too short to identify the key
    assert scrub("header x-api-key: sk-ant-admin01-abcdefgh") == "header x-api-key: sk-ant-***"
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)  # from the environment without being passed
    assert _echoes(scrub(f"key {KEY[5:30]} refused"), KEY) == []


def test_first_line_is_safe_on_empty_messages_and_scrubs():
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(RuntimeError("\n  \n")) == "RuntimeError"
    assert first_line(ValueError("\n  first  \nsecond")) == "first"
    uri = f"http://atlas:{PASSWORD}@127.0.0.1:9"
    assert first_line(OSError(f"cannot reach {uri}/api")) == "cannot reach http://127.0.0.1:9/api"
    assert len(first_line(ValueError("x" * 1000), limit=50)) == 50


def test_archdoc_reason_and_answer_never_hold_part_of_the_key(tmp_path, monkeypatch):
    from ml_atlas_sdk.archdoc import _ask_llm

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    error = f"invalid x-api-key: {KEY[:14]}...{KEY[-10:]}"
    with FakeAnthropic(status=401, error=error) as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        answer, reason = _ask_llm("describe", "claude-test")
    assert answer is None and "401" in reason and _echoes(reason, KEY) == [], reason
    with FakeAnthropic(f"# Doc\nyour key ends in {KEY[-12:]}") as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        answer, reason = _ask_llm("describe", "claude-test")
    assert reason is None and answer.startswith("# Doc") and _echoes(answer, KEY) == [], answer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    with mlflow_server(root, "", str(root / "artifacts")) as uri:
        yield uri, root


@pytest.fixture(scope="module")
def pipeline(server, tmp_path_factory):
    """The demo pipeline pushed to a real MLflow server, credentials only in MLFLOW_TRACKING_*; then
    every error path that used to quote a password-bearing URI, with the outputs kept for the grep."""
    uri, _ = server
    tmp = tmp_path_factory.mktemp("pipeline")
    project = make_project_copy(tmp / "project")
    set_params(project, mlflow={"tracking_uri": uri})
    closed = f"http://atlas:{PASSWORD}@127.0.0.1:{free_port()}"
    with FakeAnthropic(status=500, error=f"upstream rejected key {KEY[:16]}... ending {KEY[-9:]}") as fake:
        env = project_env({"MLFLOW_TRACKING_USERNAME": "atlas", "MLFLOW_TRACKING_PASSWORD": PASSWORD,
                           "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": fake.url, "XDG_CACHE_HOME": str(tmp / "xdg")})
        pushed = run(["dvc", "repro"], project, env=env)
    outputs = [pushed]
    outputs.append(run(["python", "stages/upload.py", f"mlflow.tracking_uri={closed}"], project, env=env, check=False))
    run_id = next(ln.split()[3] for ln in pushed.stdout.splitlines() if ln.startswith("[upload] pushed run"))
    with_userinfo = uri.replace("http://", f"http://atlas:{PASSWORD}@")
    outputs.append(run(["atlas-bundle", "verify", run_id, "--tracking-uri", with_userinfo], project, env=env, check=False))
    outputs.append(run(["atlas-bundle", "verify", run_id, "--tracking-uri", closed], project, env=env, check=False))
    return project, tmp, run_id, outputs


def test_pipeline_pushes_with_env_credentials_and_errors_name_no_password(pipeline):
    project, _, run_id, (pushed, upload_closed, verify_ok, verify_closed) = pipeline
    assert "[upload] pushed run" in pushed.stdout
    assert '"origin": "structural"' in (project / "reports/archdoc.json").read_text()  # the fake API said 500
    assert upload_closed.returncode != 0 and "Traceback" not in upload_closed.stderr
    assert verify_ok.returncode == 0, verify_ok.stderr
    assert "MLFLOW_TRACKING_PASSWORD" in verify_ok.stderr  # the CLI says how to pass the password instead
    assert verify_closed.returncode == 1 and f"run {run_id}: cannot be read from http://127.0.0.1:" in verify_closed.stderr


def test_view_run_line_printed_by_mlflow_carries_no_password(pipeline, server, capfd):
    uri, _ = server
    project, *_ = pipeline
    bundle = project / "build/bundle" / BUNDLE_DIR_NAME
    with_userinfo = uri.replace("http://", f"http://atlas:{PASSWORD}@")
    push_bundle(bundle, build_manifest(bundle), {}, {}, with_userinfo, "view-run-line")
    out = capfd.readouterr()
    assert "View run" in out.out and uri in out.out  # MLflow's link stays, minus the credentials
    assert PASSWORD not in out.out + out.err


def test_nothing_written_anywhere_holds_the_password_or_the_key(pipeline, server):
    """stdout/stderr, reports/, dvc.lock, params.yaml, .dvc/cache (run cache too), build/, git history,
    the server's database, artifacts and log, and the archdoc cache."""
    project, tmp, _, outputs = pipeline
    _, server_root = server
    texts = {f"output {i}": p.stdout + p.stderr for i, p in enumerate(outputs)}
    texts["git history"] = run(["git", "log", "-p", "--all"], project).stdout + run(["git", "diff", "--cached"], project).stdout
    for root in (project, tmp / "xdg", server_root):
        for path in root.rglob("*"):
            if path.is_file() and ".git" not in path.relative_to(root).parts:
                texts[str(path)] = path.read_bytes().decode("latin-1")
    assert any(name.endswith("dvc.lock") for name in texts) and any("/.dvc/cache/" in name for name in texts)
    leaks = {name: _echoes(text, KEY) or PASSWORD for name, text in texts.items() if PASSWORD in text or _echoes(text, KEY)}
    assert leaks == {}


def test_every_stage_error_line_is_scrubbed(tmp_path):
    # run_stage is the one place every stage's error passes: an error that happens to quote a
    # secret from the environment (here through a data path) must not print it back.
    project = make_project_copy(tmp_path / "project")
    proc = run(["python", "stages/tensorize.py", f"data.val_inputs=data/{PASSWORD}.parquet"], project, check=False,
               env=project_env({"MLFLOW_TRACKING_PASSWORD": PASSWORD}))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: data.val_inputs: data/") and PASSWORD not in proc.stderr
