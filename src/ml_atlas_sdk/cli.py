"""`atlas-bundle verify RUN_ID [--tracking-uri URI]`: re-check a pushed bundle before trusting it."""
from __future__ import annotations

import argparse
import sys

from ml_atlas_sdk.consumer import verify


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="atlas-bundle", description="Check atlas bundles pushed to MLflow.")
    sub = parser.add_subparsers(dest="command", required=True)
    verify_cmd = sub.add_parser("verify", help="download atlas/ of a run and re-check every file, schema and ORT outputs")
    verify_cmd.add_argument("run_id")
    verify_cmd.add_argument("--tracking-uri", default=None, help="defaults to MLFLOW_TRACKING_URI / MLflow's default")
    args = parser.parse_args(argv)
    problems = verify(args.run_id, args.tracking_uri)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"run {args.run_id}: bundle verified (manifest, schema, tensors, onnxruntime)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
