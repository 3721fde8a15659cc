"""The dynamic_axes verdict: the exported model agrees with the eager one at other sizes of every
declared non-batch dynamic axis (the probes are run by ml_atlas_sdk.axis_probe)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ml_atlas_sdk.checks.registry import check
from ml_atlas_sdk.checks.result import Finding


def likely_cause(hazards: Sequence[str]) -> str:
    """' | likely cause: <first forward_scan hazard>' when forward_scan warned, else ''."""
    if not hazards:
        return ""
    more = f" (+{len(hazards) - 1} more forward_scan warning(s))" if len(hazards) > 1 else ""
    return f" | likely cause (forward_scan): {hazards[0]}{more}"


def sizes_exercised(probes: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    sizes: dict[str, list[int]] = {}
    for p in probes:
        sizes.setdefault(p["axis"], []).append(p["size"])
    return {axis: sorted(set(s)) for axis, s in sizes.items()}


@check("dynamic_axes")
def dynamic_axes(probes: Sequence[dict[str, Any]] | None, data_lengths: dict[str, list[int]],
                 hazards: Sequence[str] = ()) -> Finding:
    """`probes`: SizeProbe dicts (None: nothing could be probed, e.g. no model to compare with)."""
    sizes = sizes_exercised(probes or [])
    # Without the probes' timings: validation_report.json is in the bundle, whose bytes must be the
    # same for the same content (reuse and the two doors compare them); export's report keeps them.
    timeless = [{k: v for k, v in p.items() if k != "seconds"} for p in probes or []]
    details: dict[str, Any] = {"sizes": sizes, "data_lengths": data_lengths, "probes": timeless}
    if not data_lengths:
        return Finding(None, "no non-batch dynamic axis is declared on an input", details)
    if probes is None:
        return Finding(None, "not run: no model to compare with at other sizes", details)
    uneven = {axis: lengths for axis, lengths in data_lengths.items() if len(lengths) > 1}
    if uneven:
        return Finding(False, "; ".join(f"inputs sharing dynamic axis {axis!r} have different lengths {lengths} in "
                                        "val_inputs; they must change together" for axis, lengths in uneven.items()),
                       details)
    failed = [p for p in probes or [] if p["status"] != "ok"]
    if failed:
        head = "; ".join(p["message"] for p in failed[:3])
        more = f" (+{len(failed) - 3} more)" if len(failed) > 3 else ""
        return Finding(False, f"dynamic axis {failed[0]['axis']!r}: {head}{more}{likely_cause(hazards)}", details)
    shown = ", ".join(f"{axis} {sizes[axis]} (data {data_lengths[axis][0]})" for axis in sizes)
    return Finding(True, f"ONNX agrees with PyTorch at other sizes: {shown}", details)
