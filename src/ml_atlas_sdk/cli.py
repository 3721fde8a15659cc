"""`atlas-bundle verify RUN_ID [--tracking-uri URI]`: re-check a pushed bundle before trusting it."""
from __future__ import annotations

import argparse
import sys

from ml_atlas_sdk.consumer import verify
from ml_atlas_sdk.secrets import first_line, uri_secrets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="atlas-bundle", description="Check atlas bundles pushed to MLflow.")
    sub = parser.add_subparsers(dest="command", required=True)
    verify_cmd = sub.add_parser("verify", help="download atlas/ of a run and re-check every file, schema and ORT outputs")
    verify_cmd.add_argument("run_id")
    verify_cmd.add_argument("--tracking-uri", default=None, help="defaults to MLFLOW_TRACKING_URI / MLflow's default")
    args = parser.parse_args(argv)
    if args.tracking_uri and uri_secrets(args.tracking_uri):
        print("warning: --tracking-uri carries a password or query string, which shell history keeps; "
              "set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead", file=sys.stderr)
    try:
        problems = verify(args.run_id, args.tracking_uri)
    except Exception as exc:  # a traceback could quote the tracking URI; one scrubbed line instead
        print(f"error: run {args.run_id}: {type(exc).__name__}: {first_line(exc, args.tracking_uri)}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"run {args.run_id}: bundle verified (manifest, schema, tensors, onnxruntime)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
