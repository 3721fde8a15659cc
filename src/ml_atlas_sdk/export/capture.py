"""Capture what the exporters print (Python and C++ alike) so the console stays readable, and
without terminal colour codes: the text ends up in reports, check messages and MLflow."""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field


# CSI sequences (colours, cursor moves: ESC [ ... letter) and OSC ones (links: ESC ] ... BEL or ST).
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def plain(text: str) -> str:
    """`text` without terminal escape sequences (the dynamo exporter colours its errors)."""
    return _ANSI.sub("", text)


@dataclass
class CapturedText:
    text: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def full(self) -> str:
        return "\n".join([*self.warnings, self.text]).strip()


@contextlib.contextmanager
def captured_output() -> Iterator[CapturedText]:
    """Redirect fds 1 and 2, sys.stdout/sys.stderr and warnings into one CapturedText."""
    captured = CapturedText()
    py_buffer = io.StringIO()
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as fd_sink:
        saved = os.dup(1), os.dup(2)
        os.dup2(fd_sink.fileno(), 1)
        os.dup2(fd_sink.fileno(), 2)
        try:
            with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(py_buffer), contextlib.redirect_stderr(py_buffer):
                warnings.simplefilter("always")
                yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            fd_sink.seek(0)
            native = fd_sink.read().decode("utf-8", errors="replace")
            captured.text = plain(py_buffer.getvalue() + native).strip()
            captured.warnings = [plain(f"{w.category.__name__}: {w.message}") for w in caught]
