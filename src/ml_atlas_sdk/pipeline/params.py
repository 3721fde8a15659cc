"""Recompose params.yaml from conf/ exactly as `dvc exp run` does (`make params`).

    python -m ml_atlas_sdk.pipeline.params [--check] [override ...]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from dvc.utils.hydra import compose_and_dump


def compose_params(root: Path, output: Path, overrides: list[str] | None = None) -> Path:
    """The same call DVC makes, so params.yaml is byte-identical to what `dvc exp run` writes."""
    compose_and_dump(output, str((root / "conf").resolve()), None, "config", str(root.resolve()), overrides or [])
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether params.yaml is up to date")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    root = Path.cwd()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = compose_params(root, Path(tmp) / "params.yaml", args.overrides).read_text()
        if fresh != (root / "params.yaml").read_text():
            print("params.yaml differs from the composition of conf/: run `make params`", file=sys.stderr)
            return 1
        print("params.yaml matches conf/")
        return 0
    compose_params(root, root / "params.yaml", args.overrides)
    print("wrote params.yaml from conf/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
