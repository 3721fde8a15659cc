"""Run the exported model at other sizes of every declared non-batch dynamic axis.

Atlas builds engines whose optimization profiles span every size of a dynamic axis, but the
validation data has one length per axis. A trace that froze `seq_len` (an unrolled loop, an
`.item()`, `torch.tensor(x.shape[1])`) is right only there. Here each axis gets other sizes: the
defaults (one shorter, one longer than the data's) or the sizes `checks.axis_sizes` declares.
Probe inputs come from validation rows, so positions past the data's length hold real values:
a row's values along the axis continue with the next rows' values (`extend_along`), then are cut
to the size. Inputs that share an axis name change together; outputs that carry the name must
follow it.

Each size runs in a forked child (ORT, and the eager model for the reference): a native crash
there (ONNX Runtime aborting, a model's extension segfaulting) becomes a failed probe naming the
signal, never a dead stage without a report. The engine is torch-free unless a model is given,
so `verify` uses it with ORT alone.
"""
from __future__ import annotations

import faulthandler
import os
import pickle
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml_atlas_sdk.compare import Tolerance, compare_arrays, problem, tolerance_of
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.secrets import first_line

PROBE_ROWS = 4  # rows per probe: enough to mix rows, few enough that a probe costs little
CHILD_TIMEOUT_S = 900.0  # a probe of one size; a hung child is killed and named


@dataclass
class SizeProbe:
    """One axis at one size: what ran and how the outputs compared."""

    axis: str
    size: int
    declared: bool  # from checks.axis_sizes (else a default size)
    status: str = "ok"  # ok | mismatch | onnxruntime_error | pytorch_error | crashed | shape
    message: str = ""
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # What ran (the eager and ORT outputs, or their errors): kept so that other tolerances can
    # judge it again without the model (the roundtrip stage stays torch-free); not in reports.
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("raw")
        return out


def data_lengths(metadata: ModelMetadata, inputs: Mapping[str, Any]) -> dict[str, list[int]]:
    """{axis: the distinct sizes the validation data has along it} (one size when inputs agree)."""
    return {axis: sorted({int(inputs[name].shape[dim]) for name, dim in users})
            for axis, users in metadata.probe_axes().items()}


def planned_sizes(metadata: ModelMetadata, inputs: Mapping[str, Any],
                  declared: Mapping[str, list[int]]) -> dict[str, tuple[list[int], bool]]:
    """{axis: (sizes, declared?)}: checks.axis_sizes exactly where given, else one shorter and one
    longer than the data's length (just longer where the data's length is 1)."""
    plan = {}
    for axis, lengths in data_lengths(metadata, inputs).items():
        if axis in declared:
            plan[axis] = (sorted(set(declared[axis])), True)
            continue
        length = lengths[0]
        sizes = {length + max(1, length // 2)} | ({max(1, length // 2)} if length > 1 else set())
        plan[axis] = (sorted(sizes), False)
    return plan


def extend_along(values: np.ndarray, dim: int, size: int) -> np.ndarray:
    """`values` cut or continued along `dim` to `size`: row i continues with rows i+1, i+2, ..."""
    length = values.shape[dim]
    if size <= length:
        return np.take(values, range(size), axis=dim)
    pieces = [np.roll(values, -k, axis=0) for k in range(-(-size // length))]
    return np.take(np.concatenate(pieces, axis=dim), range(size), axis=dim)


def probe_inputs(metadata: ModelMetadata, inputs: Mapping[str, Any], axis: str, size: int) -> dict[str, np.ndarray]:
    """PROBE_ROWS validation rows with every input dim named `axis` at `size`."""
    rows = min(PROBE_ROWS, next(iter(inputs.values())).shape[0])
    feed = {name: np.ascontiguousarray(np.asarray(inputs[name])[:rows]) for name in metadata.input_names}
    for name, dim in metadata.probe_axes()[axis]:
        feed[name] = np.ascontiguousarray(extend_along(feed[name], dim, size))
    return feed


def expected_dims(metadata: ModelMetadata, axis: str, size: int) -> dict[str, dict[int, int]]:
    """{output: {dim: size}} for the outputs that carry `axis`."""
    found: dict[str, dict[int, int]] = {}
    for name, dim in metadata.output_axes().get(axis, []):
        found.setdefault(name, {})[dim] = size
    return found


def probe_all(
    onnx_path: Path,
    metadata: ModelMetadata,
    inputs: Mapping[str, Any],
    plan: Mapping[str, tuple[list[int], bool]],
    tolerances: Mapping[str, Tolerance] | Tolerance | None = None,
    spreads: Mapping[str, float] | None = None,
    reference: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> list[SizeProbe]:
    """Every planned size of every axis. With `reference` (the eager FP32 model's forward on a
    feed), outputs are compared under `tolerances` (the outputs' full-data `spreads` for the
    scale-aware rule); without it (the consumer has no model), only that ORT runs and that the
    outputs' shapes follow the declared axes."""
    todo = [(axis, size, declared) for axis, (sizes, declared) in plan.items() for size in sizes]
    feeds = [probe_inputs(metadata, inputs, axis, size) for axis, size, _ in todo]
    probes: list[SizeProbe] = []
    while len(probes) < len(todo):  # one child for every size left; a crash ends it at one size
        first = len(probes)
        ran, died = run_forked_each([lambda feed=feed: _run_one(onnx_path, metadata, feed, reference)
                                     for feed in feeds[first:]])
        for (axis, size, declared), outcome in zip(todo[first:], ran + ([None] if died else [])):
            probe = SizeProbe(axis, size, declared)
            if outcome is None:
                probe.status, probe.message = "crashed", f"{died} running {axis}={size}"
            else:
                probe.raw = outcome
                _judge(probe, outcome, metadata, tolerances, spreads)
            if declared and probe.status == "pytorch_error":
                raise AtlasInputError(f"checks.axis_sizes: {axis}={size}: the model's own PyTorch forward fails at this "
                                      f"size ({outcome['reference_error']}); list only sizes the model runs at")
            say(f"  {axis}={size}{' (declared)' if declared else ''}: {probe.status}"
                f"{': ' + probe.message if probe.message else ''}")
            probes.append(probe)
    return probes


_SESSIONS: dict[str, Any] = {}  # in the child: one ORT session for every size


def rejudge(kept: list[dict[str, Any]], metadata: ModelMetadata, tolerances, spreads) -> list[SizeProbe]:
    """Probes judged again under other tolerances from what ran (entries: axis, size, declared,
    status, message, raw); a crash stays a crash."""
    probes = []
    for entry in kept:
        probe = SizeProbe(entry["axis"], entry["size"], entry["declared"])
        if entry.get("raw") is None:
            probe.status, probe.message = entry["status"], entry["message"]
        else:
            probe.raw = entry["raw"]
            _judge(probe, entry["raw"], metadata, tolerances, spreads)
        probes.append(probe)
    return probes


def _run_one(onnx_path, metadata, feed, reference) -> dict[str, Any]:
    """In the child: the eager reference (if any), then ORT, each failure kept as its first line."""
    from ml_atlas_sdk import ort_engine as rt

    out: dict[str, Any] = {}
    if reference is not None:
        try:
            out["reference"] = reference(feed)
        except Exception as exc:  # the user's forward at this size; judged in the parent
            out["reference_error"] = f"{type(exc).__name__}: {first_line(exc)}"
            return out
    try:
        if str(onnx_path) not in _SESSIONS:
            _SESSIONS[str(onnx_path)] = rt.cpu_session(onnx_path, probe=True)
        session = _SESSIONS[str(onnx_path)]
        values = session.run(list(metadata.output_names), feed)
    except Exception as exc:  # ORT's own error types
        out["ort_error"] = first_line(exc)
    else:
        out["onnx"] = dict(zip(metadata.output_names, values))
    return out


def _judge(probe: SizeProbe, ran: dict[str, Any], metadata: ModelMetadata,
           tolerances, spreads: Mapping[str, float] | None) -> None:
    where = f"{probe.axis}={probe.size}"
    if "reference_error" in ran:
        probe.status = "pytorch_error"
        probe.message = (f"PyTorch forward fails at {where}: {ran['reference_error']}; the axis is declared dynamic: "
                         "declare it static, or list the sizes atlas will serve in checks.axis_sizes")
        return
    if "ort_error" in ran:
        probe.status, probe.message = "onnxruntime_error", f"onnxruntime fails at {where}: {ran['ort_error']}"
        return
    onnx_out = ran["onnx"]
    bad = [f"{name}: dim {dim} is {onnx_out[name].shape[dim] if dim < onnx_out[name].ndim else 'missing'}, "
           f"expected {size} (declared {probe.axis!r})"
           for name, dims in expected_dims(metadata, probe.axis, probe.size).items() for dim, size in dims.items()
           if dim >= onnx_out[name].ndim or onnx_out[name].shape[dim] != size]
    if bad:
        probe.status, probe.message = "shape", f"at {where}: " + "; ".join(bad)
        return
    if "reference" not in ran or tolerances is None:
        return
    for name in metadata.output_names:
        spread = (spreads or {}).get(name)
        probe.outputs[name] = compare_arrays(onnx_out[name], ran["reference"][name], tolerance_of(tolerances, name), spread)
    lines = [line for name, m in probe.outputs.items() if (line := problem(name, m, "ONNX", "PyTorch"))]
    if lines:
        probe.status, probe.message = "mismatch", f"at {where}: " + "; ".join(lines)


class ChildDied(Exception):
    """The forked child ended without a result: a native crash, a kill or a hang."""


def run_forked_each(calls: list[Callable[[], Any]], timeout: float = CHILD_TIMEOUT_S) -> tuple[list[Any], str | None]:
    """Each call in one forked child, in order; returns the results of those that finished and, if
    the child died on the next one (a native crash, a kill, a hang), what ended it. A Python
    exception in a call is re-raised here. Where fork does not exist, the calls run in this process."""
    if not hasattr(os, "fork"):
        return [call() for call in calls], None
    with tempfile.TemporaryDirectory(prefix="atlas-probe-") as tmp:
        results = Path(tmp)
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller's code
            faulthandler.disable()  # a crash here is reported by the parent, not dumped as a traceback
            if "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(1)  # the parent's OpenMP pool does not survive fork
            code = 1
            try:
                for index, call in enumerate(calls):
                    try:
                        outcome = ("ok", call())
                    except BaseException as exc:  # SystemExit from user code included: a result either way
                        outcome = ("raised", exc)
                    try:
                        payload = pickle.dumps(outcome)
                    except Exception:  # an exception type that does not pickle: its text still does
                        payload = pickle.dumps(("raised", RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]}")))
                    (results / f"{index}.part").write_bytes(payload)
                    (results / f"{index}.part").rename(results / f"{index}.pickle")
                code = 0
            finally:
                os._exit(code)
        died = _wait(pid, timeout)
        done = []
        for index in range(len(calls)):
            path = results / f"{index}.pickle"
            if not path.is_file():
                break
            kind, value = pickle.loads(path.read_bytes())
            if kind == "raised":
                raise value
            done.append(value)
    return done, (died or "the process ended early") if len(done) < len(calls) else None


def _wait(pid: int, timeout: float) -> str | None:
    """None when the child exited 0, else what ended it."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"the process hung for {timeout:.0f}s and was killed"
        time.sleep(0.005)
    if os.WIFSIGNALED(status):
        return f"the process crashed natively ({signal.Signals(os.WTERMSIG(status)).name})"
    code = os.WEXITSTATUS(status)
    return None if code == 0 else f"the process exited with code {code}"
