"""The embedded store (`sqlite:///mlflow.db`, artifacts in `mlartifacts/` beside it) stays usable
when two processes open a fresh file at once and when the project folder is copied or moved."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

ARTIFACTS_DIR = "mlartifacts"
# MLflow records absolute artifact paths; these columns hold them (those missing are skipped).
_PATH_COLUMNS = [("runs", "artifact_uri"), ("logged_models", "artifact_location"),
                 ("model_versions", "source"), ("model_versions", "storage_location")]


def db_path(tracking_uri: str) -> Path | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(os.path.abspath(tracking_uri[len("sqlite:///"):].split("?", 1)[0]))


def project_tracking_uri(tracking_uri: str) -> str:
    """A relative `sqlite:///mlflow.db` made absolute against the project root: `$DVC_ROOT` where DVC
    runs the stage (DVC sets it to the original repository also for `dvc exp run --queue`/`--temp`,
    whose stages run in a temporary copy under `.dvc/tmp/exps/` that is deleted afterwards), else
    the working directory (a stage run by hand from the project root)."""
    if not tracking_uri.startswith("sqlite:///"):
        return tracking_uri
    path, sep, query = tracking_uri[len("sqlite:///"):].partition("?")
    if os.path.isabs(path) or path in ("", ":memory:"):
        return tracking_uri
    root = os.environ.get("DVC_ROOT") or os.getcwd()
    return f"sqlite:///{os.path.abspath(os.path.join(root, path))}{sep}{query}"


def artifact_root(db: Path) -> str:
    return (db.parent / ARTIFACTS_DIR).as_uri()


@contextlib.contextmanager
def first_use_lock(db: Path) -> Iterator[None]:
    """MLflow migrates a fresh sqlite file on first use; two processes doing it at once break it."""
    import fcntl

    lock_dir = Path(tempfile.gettempdir()) / "ml-atlas-sdk-locks"
    lock_dir.mkdir(exist_ok=True)
    with open(lock_dir / f"{hashlib.sha256(str(db).encode()).hexdigest()[:24]}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def follow_copy(db: Path) -> list[str]:
    """Point experiments whose `mlartifacts/` lies beside another copy of this database at the one
    beside this file, so a copied project never writes into (or reads from) the original folder.

    Only when this copy has its own `mlartifacts/` (copied along) or the old one is gone: a
    database that is simply shared from elsewhere keeps its paths. Returns what was moved.
    """
    import sqlalchemy as sa

    here = artifact_root(db)
    engine = sa.create_engine(f"sqlite:///{db}")
    moved = []
    try:
        with engine.begin() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            if "experiments" not in tables:
                return []
            rows = conn.execute(sa.text("SELECT experiment_id, artifact_location FROM experiments")).all()
            for exp_id, old in rows:
                if not _is_stale_copy(old, here, db):
                    continue
                conn.execute(sa.text("UPDATE experiments SET artifact_location = :new WHERE experiment_id = :e"),
                             {"new": here, "e": exp_id})
                for table, column in _PATH_COLUMNS:
                    if table in tables and column in {c["name"] for c in sa.inspect(conn).get_columns(table)}:
                        conn.execute(sa.text(f"UPDATE {table} SET {column} = :new || substr({column}, :n) "
                                             f"WHERE substr({column}, 1, :n - 1) = :old"),
                                     {"new": here + "/", "old": old.rstrip("/") + "/", "n": len(old.rstrip("/")) + 2})
                moved.append(f"experiment {exp_id}: {old} -> {here}")
    finally:
        engine.dispose()
    return moved


def _is_stale_copy(old: str | None, here: str, db: Path) -> bool:
    if not old or not old.startswith("file://") or old.rstrip("/") == here:
        return False
    old_dir = Path(unquote(urlsplit(old).path))
    if old_dir.name != ARTIFACTS_DIR:
        return False  # not laid out by us: an explicit location the user chose
    return (db.parent / ARTIFACTS_DIR).is_dir() or not old_dir.is_dir()
