"""A pass over a mapped tensor file holds one batch of it resident, not the file (mapped_pages)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ml_atlas_sdk import mapped_pages, ptfile
from ml_atlas_sdk.tensors import slice_rows

ROWS, WIDTH = 400_000, 40  # 64 MB of float32


def _resident_file_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssFile:")) / 1024


@pytest.fixture(scope="module")
def tensor_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mapped") / "val_inputs.pt"
    ptfile.save({"x": np.arange(ROWS * WIDTH, dtype=np.float32).reshape(ROWS, WIDTH), "ids": np.arange(ROWS)}, path)
    return path


def _pass(x, release: bool) -> tuple[float, float]:
    """Sum every row in batches; returns (sum, peak growth of resident file pages in MB)."""
    before, peak, total = _resident_file_mb(), 0.0, 0.0
    for start in range(0, ROWS, 512):
        batch = x[start : start + 512]
        total += float(batch.sum(dtype=np.float64)) if isinstance(batch, np.ndarray) else float(batch.double().sum())
        if release:
            mapped_pages.release([batch])
        peak = max(peak, _resident_file_mb() - before)
    return total, peak


@pytest.mark.parametrize("writable", [False, True], ids=["read-only", "copy-on-write torch"])
def test_a_pass_that_releases_holds_a_batch_not_the_file(tensor_file, writable):
    expected = float(np.arange(ROWS * WIDTH, dtype=np.float64).sum())
    loaded = ptfile.load(tensor_file, writable=writable)["x"]
    x = torch.from_numpy(loaded) if writable else loaded
    total, peak = _pass(x, release=True)
    assert total == expected and peak < 8, peak
    kept = ptfile.load(tensor_file, writable=writable)["x"]
    total, peak = _pass(torch.from_numpy(kept) if writable else kept, release=False)
    assert total == expected and peak > 40, peak  # the same pass without it keeps the file's 64 MB


def test_take_reads_scattered_rows_in_order_without_keeping_the_file(tensor_file):
    x = ptfile.load(tensor_file, writable=True)["x"]
    rows = np.random.default_rng(0).choice(ROWS, 300, replace=False).tolist() + [7, 7]  # unsorted, repeated
    before = _resident_file_mb()
    picked = mapped_pages.take(x, rows)
    assert _resident_file_mb() - before < 8
    assert np.array_equal(picked, np.arange(ROWS * WIDTH, dtype=np.float32).reshape(ROWS, WIDTH)[rows])
    as_tensor = slice_rows({"x": torch.from_numpy(x)}, torch.tensor(rows))["x"]
    assert isinstance(as_tensor, torch.Tensor) and torch.equal(as_tensor, torch.from_numpy(picked))


def test_memory_that_is_not_a_mapped_file_is_never_touched(tensor_file):
    ptfile.load(tensor_file)  # a mapping exists, but not of these arrays
    in_memory = np.ones((1000, 64), np.float32)
    mapped_pages.release([in_memory, torch.ones(1000, 64)])
    assert in_memory.sum() == 1000 * 64
    assert np.array_equal(mapped_pages.take(in_memory, [3, 1]), in_memory[[3, 1]])


def test_written_copy_on_write_rows_read_as_the_file_after_release(tensor_file):
    """A model that writes into its input batch changes neither the file nor, for the pages handed
    back, a later pass."""
    x = torch.from_numpy(ptfile.load(tensor_file, writable=True)["x"])
    x[:512] = -1.0  # an in-place op on the inputs
    mapped_pages.release([x[:512]])
    assert float(x[0, 1]) == 1.0 and float(x[400, 0]) == 400 * WIDTH
    assert float(ptfile.load(tensor_file)["x"][0, 1]) == 1.0


def test_slice_rows_by_a_slice_gives_views(tensor_file):
    x = ptfile.load(tensor_file)["x"]
    window = slice_rows({"x": x}, slice(10, 20))["x"]
    assert np.shares_memory(window, x) and window.shape == (10, WIDTH)
