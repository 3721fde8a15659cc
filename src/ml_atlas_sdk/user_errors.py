"""Turn an exception raised by the user's model code into one line naming rows, module and file.

The frame that matters to the user is the deepest one in their own code (not torch's, not ours);
the module is the deepest `nn.Module` of their model whose method was running, named by its
`named_modules()` path, read from the traceback's frames so nothing is hooked into the model.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import sysconfig
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ml_atlas_sdk.dtypes import dtype_name
from ml_atlas_sdk.errors import AtlasInputError, ModelCodeError
from ml_atlas_sdk.secrets import first_line, scrub

if TYPE_CHECKING:
    import torch

# Found, not imported: every stage's error path loads this module, the data-only ones without torch.
_TORCH_DIR = str(Path(importlib.util.find_spec("torch").submodule_search_locations[0]).resolve())
_OUR_DIR = str(Path(__file__).resolve().parent)
_OUR_DEMO_DIR = os.path.join(_OUR_DIR, "demo")  # the demo model is user code as far as a traceback goes
_STDLIB_DIRS = {str(Path(sysconfig.get_paths()[k]).resolve()) for k in ("stdlib", "platstdlib")}
ROW_RETRY_SECONDS = 5.0  # budget for finding the first failing row one row at a time


def is_user_file(filename: str) -> bool:
    if filename.startswith("<"):
        return False
    path = str(Path(filename).resolve())
    if path.startswith(_OUR_DEMO_DIR + os.sep):
        return True
    in_site = "site-packages" in path or "dist-packages" in path
    return not (path.startswith((_TORCH_DIR + os.sep, _OUR_DIR + os.sep))
                or (not in_site and any(path.startswith(d + os.sep) for d in _STDLIB_DIRS)))


def user_frame(tb: TracebackType | None) -> dict[str, Any] | None:
    """The deepest frame in the user's code: file (relative to the working directory when
    under it), line, function and source line."""
    frames = [f for f in traceback.extract_tb(tb) if is_user_file(f.filename)]
    if not frames:
        return None
    last = frames[-1]
    return {"file": shown_path(last.filename), "line": last.lineno, "function": last.name, "code": scrub((last.line or "").strip())}


def failing_module(tb: TracebackType | None, model: torch.nn.Module) -> str | None:
    """`named_modules()` path of the deepest module of `model` whose code was running ("" = the model itself)."""
    names = {id(m): name for name, m in model.named_modules()}
    found = None
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if owner is not None and id(owner) in names:
            found = names[id(owner)]
        tb = tb.tb_next
    return found


def describe(exc: BaseException) -> str:
    """`Type: first line`, scrubbed: user code may put a URL with credentials in its messages."""
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__


def at(frame: dict[str, Any] | None) -> str:
    return f" ({frame['file']}:{frame['line']})" if frame else ""


def format_rows(rows: Sequence[int]) -> str:
    rows = list(rows)
    if len(rows) == 1:
        return f"row {rows[0]}"
    if rows == list(range(rows[0], rows[0] + len(rows))):
        return f"rows {rows[0]}-{rows[-1]}"
    shown = ", ".join(str(r) for r in rows[:5])
    return f"rows {shown}" + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


def forward_failure(exc: BaseException, model: torch.nn.Module, args: Sequence[torch.Tensor], input_names: Sequence[str],
                    rows: Sequence[int], subject: str) -> ModelCodeError:
    """The error for a forward() that raised on `args` (the rows `rows` of `subject`)."""
    tb = exc.__traceback__
    frame, module = user_frame(tb), failing_module(tb, model)
    place = [type(model.get_submodule(module)).__name__] if module else []
    place += [f"{frame['file']}:{frame['line']}"] if frame else []
    where = f" in module {module!r}" if module else f" in {type(model).__name__}.forward" if module == "" else ""
    where += f" ({', '.join(place)})" if place else ""
    first = _first_failing_row(model, args, rows)
    shapes = ", ".join(f"{n} {dtype_name(a)}{list(a.shape)}" for n, a in zip(input_names, args))
    message = (f"model forward failed on {subject} {format_rows(rows)}"
               + (f" (first failing row {first})" if first is not None and len(rows) > 1 else "")
               + f"{where}: {describe(exc)} [inputs: {shapes}]")
    return ModelCodeError(message, user_frame=frame, module=module, subject=subject,
                          rows=format_rows(rows), first_failing_row=first, exception=describe(exc))


def code_failure(prefix: str, exc: BaseException) -> ModelCodeError:
    """An error from importing or calling the user's code outside forward (factory, module top level)."""
    frame = user_frame(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:  # the bad line is not a frame of the traceback
        frame = {"file": shown_path(exc.filename), "line": exc.lineno, "function": None, "code": scrub((exc.text or "").strip())}
    return ModelCodeError(f"{prefix} raised {describe(exc)}{at(frame)}", user_frame=frame, exception=describe(exc))


def stage_failure(exc: AtlasInputError, stage: str, reports_dir: Path = Path("reports")) -> str:
    """The line a stage prints for `exc`; for errors in the user's model code also write the stage's
    report, so `reports/<stage>.json` keeps the user's last frame beside the message."""
    message = str(exc)
    if not isinstance(exc, ModelCodeError):
        return message
    if exc.details.get("subject") == "val_inputs":
        message += _tensorize_hint(reports_dir)
    from ml_atlas_sdk.reports import write_json  # reports imports checks; keep this module light

    # No checks ran, so the report holds no verdicts: the error is what `dvc exp show` and people see.
    write_json(reports_dir / f"{stage}.json", {"verdicts": {}, "metrics": {}, "checks": [], "status": "error",
                                                "error": {"message": message, **exc.details}})
    return message


def _tensorize_hint(reports_dir: Path) -> str:
    """A forward that fails on tensors whose shape or dtype tensorize already flagged: say so."""
    path = reports_dir / "tensorize.json"
    try:
        checks = json.loads(path.read_text())["checks"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    failed = [c for c in checks if c.get("name") == "df_shape_dtype" and c.get("subject") == "val_inputs"
              and c.get("verdict") == "failed"]
    return f"; tensorize's df_shape_dtype check had already failed: {failed[0].get('message', '')[:300]}" if failed else ""


def _first_failing_row(model: torch.nn.Module, args: Sequence[torch.Tensor], rows: Sequence[int]) -> int | None:
    """Retry the batch one row at a time (within a time budget) to name the first row that raises."""
    import torch

    if len(rows) < 2:
        return None
    deadline = time.perf_counter() + ROW_RETRY_SECONDS
    with torch.no_grad():
        for i, row in enumerate(rows):
            if time.perf_counter() > deadline:
                return None
            try:
                model(*[a[i : i + 1] for a in args])
            except (Exception, SystemExit):  # a forward that calls sys.exit fails here too
                return row
    return None  # every row alone works: the failure depends on the batch as a whole


def shown_path(filename: str, within_sys_path: bool = False) -> str:
    """The file relative to the working directory, else (`within_sys_path`: a module path, as a
    localization shows it) to the deepest sys.path entry holding it, else absolute."""
    path = Path(filename).resolve()
    roots = [Path.cwd(), *(sorted((Path(p) for p in sys.path if p), key=lambda p: -len(str(p))) if within_sys_path else ())]
    for root in roots:
        try:
            return str(path.relative_to(root.resolve()))
        except (ValueError, OSError):
            continue
    return str(path)
