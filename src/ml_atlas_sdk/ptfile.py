"""`torch.save`'s file format for a `dict[str, ndarray]`, read and written without importing torch.

The bundle's `.pt` files are what `torch.load(weights_only=True)` reads, and the stages that never
run the model (tensorize, roundtrip, drift, upload) handle the same files with numpy alone: they
skip torch's ~1 s import, and reading maps each tensor's bytes (64-byte aligned, uncompressed)
straight from the file, no copy. The format: a zip whose `data.pkl` pickles the dict, each tensor
as `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())` with its
storage in record `data/<key>`. Reading accepts only those few pickle globals, so a hostile pickle
is refused as `weights_only=True` would, and it reads what `torch.save` writes too.
"""
from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ml_atlas_sdk import mapped_pages
from ml_atlas_sdk.errors import AtlasInputError

# torch storage class name <-> numpy dtype, for the dtypes numpy has (it has no bfloat16).
_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "ComplexFloatStorage": np.complex64, "ComplexDoubleStorage": np.complex128,
}
_STORAGE_OF = {np.dtype(v): k for k, v in _STORAGES.items()}
_ALIGN = 64  # torch.save aligns every storage record to 64 bytes; so does this writer


def as_arrays(tensors) -> dict[str, np.ndarray]:
    """Arrays of a dict of numpy arrays or CPU torch tensors (shared memory, no copy)."""
    out = {}
    for name, value in tensors.items():
        if hasattr(value, "detach"):  # a torch.Tensor, taken apart without importing torch
            value = value.detach().cpu()
            if str(value.dtype) == "torch.bfloat16":
                raise AtlasInputError(f"tensor {name!r}: bfloat16 has no numpy dtype; cast it to float32")
            value = value.numpy()
        out[name] = np.asarray(value)
    return out


def save(tensors, path: Path) -> None:
    """Write `tensors` (name -> array or tensor) to `path` in torch.save's format."""
    arrays = {k: np.require(v, requirements="C") for k, v in as_arrays(tensors).items()}  # keeps 0-d
    for name, array in arrays.items():
        if array.dtype not in _STORAGE_OF:
            raise AtlasInputError(f"tensor {name!r}: dtype {array.dtype} has no torch storage type")
        if array.dtype.byteorder == ">":
            raise AtlasInputError(f"tensor {name!r}: big-endian arrays are not written")
    root = path.stem  # torch.load takes the archive's root folder from the first record, any name
    with open(path, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        _write_record(archive, raw, f"{root}/data.pkl", _pickle(arrays))
        _write_record(archive, raw, f"{root}/byteorder", b"little")
        for key, array in enumerate(arrays.values()):
            _write_record(archive, raw, f"{root}/data/{key}", array)
        _write_record(archive, raw, f"{root}/version", b"3\n")


def load(path: Path, writable: bool = False) -> dict[str, np.ndarray]:
    """name -> array, each mapped from the file (read-only unless `writable`: copy-on-write)."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise AtlasInputError(f"{path}: not a torch.save file ({exc})") from None
    with archive:
        names = archive.namelist()
        root = names[0].split("/", 1)[0] if names else ""
        try:
            pickled = archive.read(f"{root}/data.pkl")
            little = archive.read(f"{root}/byteorder") == b"little" if f"{root}/byteorder" in names else True
        except KeyError:
            raise AtlasInputError(f"{path}: not a torch.save file (no data.pkl)") from None
        if not little:
            raise AtlasInputError(f"{path}: big-endian tensors are not read")
        records = {name: archive.getinfo(name) for name in names}
        unpickler = _Unpickler(io.BytesIO(pickled), path, root, records, "c" if writable else "r")
        try:
            loaded = unpickler.load()
        except AtlasInputError:
            raise
        except Exception as exc:
            raise AtlasInputError(f"{path}: unreadable tensor file ({type(exc).__name__}: {exc})") from None
    if not isinstance(loaded, dict) or not all(isinstance(v, np.ndarray) for v in loaded.values()):
        raise AtlasInputError(f"{path}: holds {type(loaded).__name__}, not a dict of tensors")
    return dict(loaded)


def _write_record(archive: zipfile.ZipFile, raw, name: str, data: bytes | np.ndarray) -> None:
    size = data.nbytes if isinstance(data, np.ndarray) else len(data)
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed: equal tensors, equal bytes
    info.compress_type, info.file_size, info.compress_size, info.CRC = zipfile.ZIP_STORED, size, 0, 0
    zip64 = size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own rule in ZipFile.open("w")
    header = len(info.FileHeader(zip64))
    pad = -(raw.tell() + header + 4) % _ALIGN  # 4: this padding field's own id and length
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # "FB", torch's padding field
    with archive.open(info, "w", force_zip64=zip64) as out:
        if isinstance(data, np.ndarray):
            flat = data.reshape(-1).view(np.uint8) if data.size else b""
            for start in range(0, size, 64 << 20):  # 64 MB at a time: no second copy of a large tensor
                out.write(flat[start:start + (64 << 20)])
        else:
            out.write(data)


def _pickle(arrays: dict[str, np.ndarray]) -> bytes:
    """The pickle torch.save writes for a dict of contiguous CPU tensors (protocol 2)."""
    ops = [b"\x80\x02}(" ]  # PROTO 2, EMPTY_DICT, MARK
    for key, (name, array) in enumerate(arrays.items()):
        size = array.shape
        stride = tuple(int(np.prod(size[i + 1:], dtype=np.int64)) for i in range(len(size)))
        ops += [_str(name), b"ctorch._utils\n_rebuild_tensor_v2\n(",
                b"(", _str("storage"), f"ctorch\n{_STORAGE_OF[array.dtype]}\n".encode(), _str(str(key)), _str("cpu"),
                _int(array.size), b"tQ",  # TUPLE, BINPERSID
                _int(0), _tuple(size), _tuple(stride), b"\x89",  # NEWFALSE: requires_grad
                b"ccollections\nOrderedDict\n)R", b"tR"]  # OrderedDict() hooks; TUPLE, REDUCE
    ops.append(b"u.")  # SETITEMS, STOP
    return b"".join(ops)


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    data = pickle.encode_long(n)
    return b"\x8a" + bytes([len(data)]) + data


def _tuple(values) -> bytes:
    return b"(" + b"".join(_int(int(v)) for v in values) + b"t"


class _Unpickler(pickle.Unpickler):
    """Only tensors, their storages and OrderedDict: what weights_only=True allows for this file."""

    def __init__(self, file, path: Path, root: str, records: dict[str, zipfile.ZipInfo], mode: str):
        super().__init__(file)
        self._path, self._root, self._records, self._mode = path, root, records, mode

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return np.dtype(_STORAGES[name])
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        raise AtlasInputError(f"{self._path}: refused to load {module}.{name} (only tensors are read)")

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel = pid
        if kind != "storage" or not isinstance(dtype, np.dtype):
            raise AtlasInputError(f"{self._path}: unexpected persistent id {kind!r}")
        info = self._records[f"{self._root}/data/{key}"]
        if info.compress_type != zipfile.ZIP_STORED:
            raise AtlasInputError(f"{self._path}: record data/{key} is compressed")
        if numel == 0:
            return np.empty(0, dtype)
        with open(self._path, "rb") as raw:
            raw.seek(info.header_offset)
            name_len, extra_len = struct.unpack("<26xHH", raw.read(30))
        offset = info.header_offset + 30 + name_len + extra_len
        return mapped_pages.register(np.memmap(self._path, dtype=dtype, mode=self._mode, offset=offset, shape=(numel,)))


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, requires_grad=False, hooks=None, metadata=None):
    if not size:
        return np.asarray(storage[offset]).copy().reshape(())
    item = storage.itemsize
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size), strides=tuple(s * item for s in stride))
