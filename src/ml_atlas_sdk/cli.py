"""`atlas-bundle verify RUN_ID [--tracking-uri URI]`: re-check a pushed bundle before trusting it.
`atlas-bundle init NAME --factory M:F --val-inputs P [...]`: conf files for a new model."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.secrets import first_line, scrub, uri_secrets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="atlas-bundle", description="Onboard models and check atlas bundles.")
    sub = parser.add_subparsers(dest="command", required=True)
    verify_cmd = sub.add_parser("verify", help="download atlas/ of a run and re-check every file, schema and ORT outputs")
    verify_cmd.add_argument("run_id")
    verify_cmd.add_argument("--tracking-uri", default=None, help="defaults to MLFLOW_TRACKING_URI, else the mlflow.tracking_uri of the project (params.yaml) around the current folder, else MLflow's default; a local store that does not exist is refused, never created")
    _add_init(sub)
    args = parser.parse_args(argv)
    if args.command == "init":
        return _init(args, parser)
    from ml_atlas_sdk.consumer import verify  # torch, onnxruntime and MLflow: only when verifying

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


def _add_init(sub) -> None:
    cmd = sub.add_parser("init", help="write conf/{model,metadata,data}/NAME.yaml from a model and its validation data",
                         description="Build the model once, infer its metadata from forward's signature, the data and "
                                     "forward passes, write conf/{model,metadata,data}/NAME.yaml, switch the defaults "
                                     "to them and recompose params.yaml. Run it in the project's root folder.")
    cmd.add_argument("name", help="conf option and model name (letters, digits, _ and -)")
    cmd.add_argument("--factory", help="'package.module:callable' returning the nn.Module")
    cmd.add_argument("--kwargs", default="{}", help="keyword arguments for the factory, as YAML/JSON: '{family: gru}'")
    cmd.add_argument("--weights", help="state_dict file (torch.load weights_only=True)")
    cmd.add_argument("--checkpoint", help="a whole pickled module instead of --factory (needs --trust-pickle)")
    cmd.add_argument("--trust-pickle", action="store_true", help="allow --checkpoint to be unpickled (runs its code)")
    cmd.add_argument("--code-dir", action="append", dest="code_dirs", help="model code folder (repeatable); "
                     "default: models/ when the factory's module is there")
    cmd.add_argument("--val-inputs", required=True, help="validation Parquet, one column per forward parameter")
    cmd.add_argument("--val-outputs", help="your reference outputs, one column per output (optional)")
    cmd.add_argument("--calibration-inputs", help="INT8 calibration sample, columns as --val-inputs (optional)")
    cmd.add_argument("--output-names", help="comma-separated names for a tensor or tuple output")
    cmd.add_argument("--architecture", help="metadata.architecture (default: the model's class name)")
    cmd.add_argument("--task-type", help="metadata.task_type, e.g. classification")
    cmd.add_argument("--force", action="store_true", help="overwrite existing conf/*/NAME.yaml files")
    cmd.add_argument("--no-switch", dest="switch", action="store_false",
                     help="leave conf/config.yaml's defaults alone and print the override instead")


def _init(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ml_atlas_sdk.onboarding import InitRequest, init_model  # torch and the model: only for init

    if not args.factory and not args.checkpoint:
        parser.error("init: give --factory (with --weights) or --checkpoint")
    try:
        kwargs = _kwargs(args.kwargs)
        names = [n.strip() for n in args.output_names.split(",")] if args.output_names else None
        request = InitRequest(
            name=args.name, val_inputs=args.val_inputs, factory=args.factory, kwargs=kwargs, weights=args.weights,
            checkpoint=args.checkpoint, trust_pickle=args.trust_pickle, code_dirs=args.code_dirs,
            val_outputs=args.val_outputs, calibration_inputs=args.calibration_inputs, output_names=names,
            architecture=args.architecture, task_type=args.task_type, force=args.force, switch=args.switch,
        )
        init_model(request, Path.cwd())
    except AtlasInputError as exc:  # one line each, like a stage's refusal
        print(f"error: {scrub(str(exc))}", file=sys.stderr)
        return 2
    return 0


def _kwargs(text: str) -> dict:
    try:
        kwargs = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AtlasInputError(f"--kwargs: {text!r} is not YAML ({first_line(exc)})") from None
    if not isinstance(kwargs, dict):
        raise AtlasInputError(f"--kwargs: expected a mapping like '{{family: gru}}', got {text!r}")
    return kwargs


if __name__ == "__main__":
    sys.exit(main())
