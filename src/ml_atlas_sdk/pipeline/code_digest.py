"""DVC stages model_code: one digest of a model code folder, so editing code in it reruns the model stages.

    python src/ml_atlas_sdk/pipeline/code_digest.py CODE_DIR OUT_FILE

dvc.yaml cannot list `model.code_dirs` among a stage's deps (DVC interpolates only strings there), so a
`foreach` stage per folder writes its digest under build/model_code/ and the model stages depend on that
folder. Run as a plain script with the standard library only: importing the package would load torch.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

UPLOAD_REPORT = Path("reports/upload.json")  # paths.REPORTS; every stage forgets it when it starts
# Written by Python itself when the code is imported; .dvcignore skips them too.
IGNORED_DIRS = {"__pycache__"}
IGNORED_SUFFIXES = {".pyc"}


def folder_digest(folder: Path) -> str:
    """sha256 over every file's relative path and content, in a fixed order."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and not IGNORED_DIRS & set(p.relative_to(folder).parts) and p.suffix not in IGNORED_SUFFIXES)
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def problem(code_dir: Path, root: Path) -> str | None:
    if code_dir.is_absolute() or not code_dir.resolve().is_relative_to(root.resolve()):
        return f"model.code_dirs: {code_dir} is outside the project; DVC tracks only code inside it, so move or copy it in"
    if not code_dir.is_dir():
        return f"model.code_dirs: {code_dir} is not a directory"
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: code_digest.py CODE_DIR OUT_FILE", file=sys.stderr)
        return 2
    code_dir, out = Path(argv[0]), Path(argv[1])
    UPLOAD_REPORT.unlink(missing_ok=True)  # a failure here must not leave an old "pushed" behind
    error = problem(code_dir, Path.cwd())
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{folder_digest(code_dir)}  {code_dir.as_posix()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
