"""Which tracking store `verify` and `resolve` read, opened without ever creating one.

MLflow's client creates a store it cannot find (a sqlite file is created and migrated, a file
store gets its folder and a default experiment), so a verify run in the wrong folder used to leave
an empty `mlflow.db` behind and then report the run as missing from it. A reader refuses a local
store that does not exist instead; inside a project, the default is the project's own store.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

PARAMS_FILE = "params.yaml"


def default_tracking_uri(cwd: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI when set; else the `mlflow.tracking_uri` of the project the folder is in
    (the nearest params.yaml at or above it; a relative sqlite path is the project's); else MLflow's."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        uri = _project_uri(folder / PARAMS_FILE)
        if uri:
            return uri
    import mlflow

    return mlflow.get_tracking_uri()


def missing_store(uri: str) -> str | None:
    """Why `uri` names a local store that does not exist (None: it exists, or is not local)."""
    path = _local_path(uri)
    if path is None or path.exists():
        return None
    return (f"no tracking store at {path} (reading never creates one); pass --tracking-uri "
            "(tracking_uri=) or set MLFLOW_TRACKING_URI, or run inside the project that pushed the run")


def reader_client(uri: str):
    """An MlflowClient for reading `uri`; refuses (FileNotFoundError) a local store that is not there."""
    problem = missing_store(uri)
    if problem:
        raise FileNotFoundError(problem)
    from ml_atlas_sdk.mlflow_store import client_for

    return client_for(uri)


def _project_uri(params: Path) -> str | None:
    if not params.is_file():
        return None
    import yaml

    try:
        uri = ((yaml.safe_load(params.read_text()) or {}).get("mlflow") or {}).get("tracking_uri")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    if not isinstance(uri, str) or not uri:
        return None
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{params.parent / uri[len('sqlite:///'):]}"  # the project's file, from anywhere
    return uri


def _local_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(os.path.abspath(uri[len("sqlite:///"):].split("?", 1)[0]))
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme == "" and uri:  # a plain path is MLflow's file store
        return Path(os.path.abspath(uri))
    return None
