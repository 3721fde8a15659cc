"""The one typed result every check returns."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Verdict(str, Enum):
    PASSED = "passed"
    WARNED = "warned"
    FAILED = "failed"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value


# Worst first: used to fold several results of one check (e.g. nan_inf on inputs and outputs).
SEVERITY_ORDER = (Verdict.FAILED, Verdict.WARNED, Verdict.PASSED, Verdict.SKIPPED)


@dataclass(frozen=True)
class CheckResult:
    name: str
    verdict: Verdict
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    subject: str | None = None  # what was checked when one check runs on several things

    @property
    def label(self) -> str:
        return f"{self.name}[{self.subject}]" if self.subject else self.name

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict.value
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "CheckResult":
        return cls(
            name=raw["name"],
            verdict=Verdict(raw["verdict"]),
            message=raw["message"],
            details=raw.get("details") or {},
            subject=raw.get("subject"),
        )


@dataclass(frozen=True)
class Finding:
    """What a check function says; the registry turns it into a CheckResult.

    ok=True passes, ok=False becomes the check's registered severity (warned or failed),
    ok=None means "not applicable" and becomes skipped with the message as the reason.
    """

    ok: bool | None
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def worst(verdicts) -> Verdict:
    verdicts = list(verdicts)
    for v in SEVERITY_ORDER:
        if v in verdicts:
            return v
    return Verdict.SKIPPED
