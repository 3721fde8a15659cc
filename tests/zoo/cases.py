"""Zoo cases: factory, metadata, data (in the cell layouts users write) and expected verdicts."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from zoo import models

ROWS = 96
EXPORT_BATCH = 32  # fewer than ROWS: the export sample is chosen, and invariance has two slices
# Every case passes these; `ZooCase.verdicts` adds or overrides per case. No zoo model warns on
# precision: their activations stay within a few units (LayerNorm, scaled attention) and a CPU
# half-precision run of each matches FP32 within precision.fp16_rtol/atol; no case has calibration.
# dynamic_axes passes on every model with a non-batch dynamic input axis, at sizes other than the
# data's; it is skipped (nothing to probe) where `NO_SEQ_AXIS` says so.
PASSING = {"df_shape_dtype": "passed", "nan_inf": "passed", "calib_sample_count": "skipped",
           "roundtrip": "passed", "dynamic_axes": "passed", "onnx_cross_check": "passed", "sample_invariance": "passed",
           "forward_scan": "passed", "drift": "skipped",
           "fp16_range": "passed", "fp16_roundtrip": "passed", "int8_calibration_coverage": "skipped"}
NO_SEQ_AXIS = {"dynamic_axes": "skipped"}
LAYOUTS = ("tensor", "fixed_list", "list", "scalar")


@dataclass(frozen=True)
class ZooCase:
    name: str
    family: str  # zoo.models.build(family)
    metadata: dict
    make_inputs: Callable[[np.random.Generator], dict[str, np.ndarray]]  # cells in the file's dtype
    layouts: dict[str, str]  # input name -> how its Parquet column stores the cells
    with_outputs: bool = False  # also write val_outputs (float64 fixed-size lists): drift runs
    verdicts: dict[str, str] = field(default_factory=dict)
    escalation_step: int = 0  # the ladder step whose export is accepted (0 = configured settings)
    model_opset: int = 17
    kwargs: dict = field(default_factory=dict)

    factory = "zoo.models:build"  # in a project copy: "zoo_models:build" (see pipeline_params)

    def expected(self) -> dict[str, str]:
        return {**PASSING, **({"drift": "passed"} if self.with_outputs else {}), **self.verdicts}

    def model(self) -> torch.nn.Module:
        return models.build(self.family, **self.kwargs)

    def inputs(self) -> dict[str, np.ndarray]:
        return self.make_inputs(np.random.default_rng(sum(map(ord, self.name))))

    def frame(self, arrays: dict[str, np.ndarray]) -> pd.DataFrame:
        """What a notebook user hands the SDK: one column per name, one ndarray (or scalar) per cell."""
        return pd.DataFrame({n: list(a) if a.ndim > 1 else a for n, a in arrays.items()})

    def outputs(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's own outputs in float64, as a user's reference run would have saved them."""
        meta = self.metadata
        with torch.no_grad():
            raw = self.model()(*[_as_model_input(inputs[n], meta, n) for n in meta["input_names"]])
        raw = (raw,) if isinstance(raw, torch.Tensor) else raw
        return {n: t.double().numpy() for n, t in zip(meta["output_names"], raw)}

    def write_data(self, folder: Path) -> dict[str, str | None]:
        """Write val_inputs (and val_outputs) Parquet in this case's layouts; returns the data block."""
        folder.mkdir(parents=True, exist_ok=True)
        inputs = self.inputs()
        write_layout(inputs, self.layouts, folder / "val_inputs.parquet")
        data = {"val_inputs": str(folder / "val_inputs.parquet"), "val_outputs": None, "calibration_inputs": None}
        if self.with_outputs:
            outputs = self.outputs(inputs)
            write_layout(outputs, {n: "fixed_list" if a.ndim > 1 else "scalar" for n, a in outputs.items()},
                         folder / "val_outputs.parquet")
            data["val_outputs"] = str(folder / "val_outputs.parquet")
        return data


def _as_model_input(values: np.ndarray, meta: dict, name: str) -> torch.Tensor:
    declared = (meta.get("input_dtypes") or {}).get(name)
    default = "float32" if values.dtype.kind == "f" else "int64"
    return torch.from_numpy(values.astype(declared or default))


def write_layout(arrays: dict[str, np.ndarray], layouts: dict[str, str], path: Path) -> None:
    columns = {name: _column(values, layouts[name]) for name, values in arrays.items()}
    pq.write_table(pa.table(columns), path)


def _column(values: np.ndarray, layout: str) -> pa.Array:
    if layout == "scalar":
        assert values.ndim == 1, "a scalar column holds one value per row"
        return pa.array(values)
    if layout == "tensor":
        return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(values))
    arr = pa.array(values.reshape(-1))
    for size in reversed(values.shape[1:]):
        if layout == "fixed_list":
            arr = pa.FixedSizeListArray.from_arrays(arr, size)
        else:  # variable-length lists that happen to share a length, as pandas/Spark write them
            offsets = pa.array(np.arange(0, len(arr) + 1, size, dtype=np.int32))
            arr = pa.ListArray.from_arrays(offsets, arr)
    return arr


def _tokens(rng, rows, seq, dtype=np.int64):
    return rng.integers(1, models.VOCAB, size=(rows, seq)).astype(dtype)


def _padding_mask(rng, rows, seq):
    lengths = rng.integers(seq // 2, seq + 1, size=rows)
    return (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)


def _text_meta(name, inputs, arch, task, out_shape, out_axes):
    seq_axes = {0: "batch", 1: "seq"}
    return {
        "model_name": name, "input_names": inputs, "output_names": ["logits"],
        "input_shapes": {n: [-1, -1] for n in inputs}, "output_shape": {"logits": out_shape},
        "dynamic_axes": {**{n: seq_axes for n in inputs}, "logits": out_axes},
        "onnx_opset": 17, "architecture": arch, "task_type": task,
    }


SEQ = 16
CASES = [
    ZooCase(
        "bert", "bert",
        _text_meta("zoo_bert", ["input_ids", "attention_mask"], "bert-encoder", "classification",
                   [-1, 3], {0: "batch"}),
        lambda rng: {"input_ids": _tokens(rng, ROWS, SEQ), "attention_mask": _padding_mask(rng, ROWS, SEQ)},
        {"input_ids": "list", "attention_mask": "fixed_list"},
    ),
    ZooCase(
        "gpt2_mask", "gpt2_mask",
        _text_meta("zoo_gpt2_mask", ["input_ids", "attention_mask"], "gpt2-decoder", "causal-lm",
                   [-1, -1, models.VOCAB], {0: "batch", 1: "seq"}),
        lambda rng: {"input_ids": _tokens(rng, ROWS, SEQ), "attention_mask": _padding_mask(rng, ROWS, SEQ)},
        {"input_ids": "tensor", "attention_mask": "list"},
    ),
    ZooCase(
        "gpt2_nomask", "gpt2_nomask",
        _text_meta("zoo_gpt2_nomask", ["input_ids"], "gpt2-decoder", "causal-lm",
                   [-1, -1, models.VOCAB], {0: "batch", 1: "seq"}),
        lambda rng: {"input_ids": _tokens(rng, ROWS, SEQ, np.int32)},  # int32 file, int64 graph input
        {"input_ids": "fixed_list"},
        # TorchScript has no aten::diff (transformers' packed-sequence check without a mask): the
        # ladder's last step, dynamo, exports it, at opset 18.
        escalation_step=5, model_opset=18,
    ),
    ZooCase(
        "vit", "vit",
        {"model_name": "zoo_vit", "input_names": ["pixel_values"], "output_names": ["logits"],
         "input_shapes": {"pixel_values": [-1, 3, 16, 16]}, "output_shape": {"logits": [-1, 5]},
         "dynamic_axes": {"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
         "onnx_opset": 17, "architecture": "vit", "task_type": "image-classification"},
        lambda rng: {"pixel_values": rng.normal(size=(ROWS, 3, 16, 16))},  # float64 cells
        {"pixel_values": "tensor"},
        verdicts=NO_SEQ_AXIS,
    ),
    ZooCase(
        "torch_encoder", "torch_encoder",
        {"model_name": "zoo_torch_encoder", "input_names": ["x"], "output_names": ["logits"],
         "input_shapes": {"x": [-1, 10, 32]}, "output_shape": {"logits": [-1, 2]},
         "dynamic_axes": {"x": {0: "batch"}, "logits": {0: "batch"}},
         "onnx_opset": 17, "architecture": "nn.TransformerEncoder", "task_type": "classification",
         "input_dtypes": {"x": "float32"}},
        lambda rng: {"x": rng.normal(size=(ROWS, 10, 32)).astype(np.float32)},
        {"x": "fixed_list"},
        verdicts=NO_SEQ_AXIS,
        # In eval mode torch runs the fused aten::_transformer_encoder_layer_fwd, which TorchScript
        # cannot export: only the ladder's dynamo step can.
        escalation_step=5, model_opset=18,
    ),
    ZooCase(
        "lstm", "lstm",
        {"model_name": "zoo_lstm", "input_names": ["x"], "output_names": ["tags", "last_hidden"],
         "input_shapes": {"x": [-1, -1, 8]}, "output_shape": {"tags": [-1, -1, 4], "last_hidden": [-1, 16]},
         "dynamic_axes": {"x": {0: "batch", 1: "steps"}, "tags": {0: "batch", 1: "steps"},
                          "last_hidden": {0: "batch"}},
         "onnx_opset": 17, "architecture": "lstm", "task_type": "tagging"},
        lambda rng: {"x": rng.normal(size=(ROWS, 12, 8)).astype(np.float32)},
        {"x": "list"},
        with_outputs=True,
    ),
    ZooCase(
        "gru", "gru",
        {"model_name": "zoo_gru", "input_names": ["tokens"], "output_names": ["logits"],
         "input_shapes": {"tokens": [-1, 12]}, "output_shape": {"logits": [-1, 4]},
         "dynamic_axes": {"tokens": {0: "batch"}, "logits": {0: "batch"}},
         "onnx_opset": 17, "architecture": "gru", "task_type": "classification",
         "input_dtypes": {"tokens": "int32"}},  # the graph itself takes int32 token ids
        lambda rng: {"tokens": _tokens(rng, ROWS, 12, np.int32)},
        {"tokens": "fixed_list"},
        verdicts=NO_SEQ_AXIS,
    ),
    ZooCase(
        "bag_ranker", "bag_ranker",
        {"model_name": "zoo_bag_ranker", "input_names": ["item_ids", "country", "age", "dense"],
         "output_names": ["ctr", "grade"],
         "input_shapes": {"item_ids": [-1, 6], "country": [-1], "age": [-1], "dense": [-1, 3]},
         "output_shape": {"ctr": [-1, 1], "grade": [-1, 3]},
         "dynamic_axes": {n: {0: "batch"} for n in ["item_ids", "country", "age", "dense", "ctr", "grade"]},
         "onnx_opset": 17, "architecture": "embeddingbag-ranker", "task_type": "ranking"},
        lambda rng: {"item_ids": _tokens(rng, ROWS, 6), "country": rng.integers(0, 20, ROWS).astype(np.int32),
                     "age": rng.uniform(18, 80, ROWS) / 100.0, "dense": rng.normal(size=(ROWS, 3))},
        {"item_ids": "fixed_list", "country": "scalar", "age": "scalar", "dense": "list"},
        with_outputs=True,
        verdicts=NO_SEQ_AXIS,
    ),
    ZooCase(
        "convnet", "convnet",
        {"model_name": "zoo_convnet", "input_names": ["image"], "output_names": ["logits"],
         "input_shapes": {"image": [-1, 1, 16, 16]}, "output_shape": {"logits": [-1, 10]},
         "dynamic_axes": {"image": {0: "batch"}, "logits": {0: "batch"}},
         "onnx_opset": 17, "architecture": "cnn", "task_type": "image-classification"},
        lambda rng: {"image": rng.normal(size=(ROWS, 1, 16, 16)).astype(np.float32)},
        {"image": "tensor"},
        with_outputs=True,
        verdicts=NO_SEQ_AXIS,
    ),
]
CASES += [
    ZooCase(
        "t5", "t5",
        {"model_name": "zoo_t5", "input_names": ["input_ids", "attention_mask", "decoder_input_ids"],
         "output_names": ["logits"],
         "input_shapes": {"input_ids": [-1, -1], "attention_mask": [-1, -1], "decoder_input_ids": [-1, -1]},
         "output_shape": {"logits": [-1, -1, models.VOCAB]},
         "dynamic_axes": {"input_ids": {0: "batch", 1: "src_len"}, "attention_mask": {0: "batch", 1: "src_len"},
                          "decoder_input_ids": {0: "batch", 1: "tgt_len"}, "logits": {0: "batch", 1: "tgt_len"}},
         "onnx_opset": 17, "architecture": "t5-encoder-decoder", "task_type": "seq2seq"},
        lambda rng: {"input_ids": _tokens(rng, ROWS, 12), "attention_mask": _padding_mask(rng, ROWS, 12),
                     "decoder_input_ids": _tokens(rng, ROWS, 6)},
        {"input_ids": "list", "attention_mask": "fixed_list", "decoder_input_ids": "tensor"},
    ),
    ZooCase(
        "llama", "llama",
        _text_meta("zoo_llama", ["input_ids", "attention_mask"], "llama-decoder", "causal-lm",
                   [-1, -1, models.VOCAB], {0: "batch", 1: "seq"}),
        lambda rng: {"input_ids": _tokens(rng, ROWS, SEQ), "attention_mask": _padding_mask(rng, ROWS, SEQ)},
        {"input_ids": "fixed_list", "attention_mask": "list"},
    ),
]
BY_NAME = {c.name: c for c in CASES}
