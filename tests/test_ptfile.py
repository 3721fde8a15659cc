"""The torch-free `.pt` reader and writer against torch itself, both ways, and against hostile files."""
from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from ml_atlas_sdk import ptfile
from ml_atlas_sdk.errors import AtlasInputError

ARRAYS = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4), "f64": np.linspace(0, 1, 5), "f16": np.ones((2, 2), np.float16),
    "i64": np.arange(-3, 3), "i32": np.arange(4, dtype=np.int32), "i8": np.arange(-2, 2, dtype=np.int8),
    "u8": np.arange(7, dtype=np.uint8), "bool": np.array([[True, False], [False, True]]),
    "non_finite": np.array([np.nan, np.inf, -np.inf, 1.0], np.float32), "empty": np.zeros((0, 5), np.int64),
    "scalar": np.array(3.5), "transposed": np.arange(6.0, dtype=np.float32).reshape(2, 3).T, "ünïcode name": np.ones(3),
}


def _same(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("mmap", [False, True])
def test_torch_loads_what_ptfile_writes(tmp_path, mmap):
    ptfile.save(ARRAYS, tmp_path / "val_inputs.pt")
    loaded = torch.load(tmp_path / "val_inputs.pt", weights_only=True, mmap=mmap)
    assert list(loaded) == list(ARRAYS)
    for name, array in ARRAYS.items():
        assert isinstance(loaded[name], torch.Tensor) and _same(loaded[name].numpy(), array), name


def test_ptfile_reads_what_torch_writes_views_and_all(tmp_path):
    base = torch.arange(24, dtype=torch.float32)
    saved = {"view": base[2:14:3], "transposed": base[:12].reshape(3, 4).t(), "scalar": torch.tensor(7),
             "shares_storage": base.reshape(4, 6), "half": torch.ones(3, dtype=torch.float16), "mask": torch.tensor([True, False])}
    torch.save(saved, tmp_path / "t.pt")
    loaded = ptfile.load(tmp_path / "t.pt")
    for name, tensor in saved.items():
        assert _same(loaded[name], tensor.numpy()), name


def test_storages_are_64_byte_aligned_and_mapped_not_copied(tmp_path):
    big = {"x": np.arange(1 << 20, dtype=np.float32), "y": np.ones(3, np.int8)}
    ptfile.save(big, tmp_path / "t.pt")
    loaded = ptfile.load(tmp_path / "t.pt")
    assert not loaded["x"].flags.writeable and not loaded["x"].flags.owndata  # a view of the file mapping
    with zipfile.ZipFile(tmp_path / "t.pt") as archive:
        data = [i for i in archive.infolist() if "/data/" in i.filename]
    with open(tmp_path / "t.pt", "rb") as raw:
        for info in data:
            raw.seek(info.header_offset + 26)
            name_len, extra_len = (int(n) for n in np.frombuffer(raw.read(4), np.uint16))
            assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0, info.filename
    writable = ptfile.load(tmp_path / "t.pt", writable=True)
    writable["x"][0] = 42.0  # copy-on-write: the file keeps its bytes
    assert ptfile.load(tmp_path / "t.pt")["x"][0] == 0.0


def test_equal_tensors_give_equal_bytes_whether_torch_or_numpy(tmp_path):
    for folder in ("torch", "numpy"):
        (tmp_path / folder).mkdir()
    ptfile.save({"a": torch.arange(6.0).reshape(2, 3).t(), "b": torch.arange(3)}, tmp_path / "torch" / "x.pt")
    ptfile.save({"a": np.arange(6.0, dtype=np.float32).reshape(2, 3).T, "b": np.arange(3)}, tmp_path / "numpy" / "x.pt")
    assert (tmp_path / "torch" / "x.pt").read_bytes() == (tmp_path / "numpy" / "x.pt").read_bytes()


def test_bfloat16_is_refused_naming_the_tensor(tmp_path):
    with pytest.raises(AtlasInputError, match=r"tensor 'logits': bfloat16 has no numpy dtype"):
        ptfile.save({"logits": torch.ones(2, dtype=torch.bfloat16)}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("content, expected", [
    ({"x": _Payload()}, r"refused to load posix.system|refused to load nt.system"),
    ([1, 2, 3], r"holds list, not a dict of tensors"),
])
def test_hostile_or_foreign_pickles_are_refused_in_one_line(tmp_path, content, expected):
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(content, protocol=2))
        archive.writestr("evil/version", "3\n")
    with pytest.raises(AtlasInputError, match=expected) as caught:
        ptfile.load(tmp_path / "evil.pt")
    assert "\n" not in str(caught.value)


def test_not_a_zip_is_one_line(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a torch file")
    with pytest.raises(AtlasInputError, match=r"x.pt: not a torch.save file"):
        ptfile.load(tmp_path / "x.pt")
