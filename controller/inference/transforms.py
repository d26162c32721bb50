"""Model rewrites made at load, in memory (the file and its hash stay as they are): FP16 with
float32 inputs and outputs, and a prologue that takes uint8 HWC views and normalises them inside
the model, so a GPU does the conversion the CPU would otherwise do per view."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class TransformError(Exception):
    """The rewrite is impossible here (a missing package, a model it cannot handle)."""


def load_model(source: Path | bytes) -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise TransformError(f"needs onnx (pip install '.[gpu]'): {exc}") from exc
    return onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(str(source))


def fp16_model(path: Path) -> bytes:
    """The model with FP16 weights and arithmetic and float32 inputs and outputs (Cast nodes at the
    edges), serialised for onnxruntime. Raises TransformError."""
    model = load_model(path)
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise TransformError(f"needs onnx and onnxconverter-common (pip install '.[gpu]'): {exc}") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # it warns for every weight it rounds into FP16's range
            half = float16.convert_float_to_float16(model, keep_io_types=True)
    except Exception as exc:  # onnx's and the converter's errors are untyped
        raise TransformError(f"FP16 conversion failed: {str(exc)[:200]}") from exc
    data: bytes = half.SerializeToString()
    return data


def uint8_prologue(source: Path | bytes, mean: Sequence[float], std: Sequence[float]) -> bytes:
    """The model with a new first input, `<input>_u8` (N, H, W, 3) uint8, cast, transposed to NCHW
    and normalised ((x - mean) / std per channel, in float32) into the model's own input.
    Raises TransformError."""
    from onnx import TensorProto, helper, numpy_helper

    model = load_model(source)
    graph = model.graph
    initialisers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    if len(inputs) != 1:
        raise TransformError(f"the model has {len(inputs)} inputs, the prologue needs one")
    x = inputs[0]
    dims = x.type.tensor_type.shape.dim
    if x.type.tensor_type.elem_type != TensorProto.FLOAT or len(dims) != 4:
        raise TransformError("the prologue needs one float32 NCHW input")
    if dims[1].HasField("dim_value") and dims[1].dim_value != 3:
        raise TransformError(f"the model's input has {dims[1].dim_value} channels, not 3")

    def dim(d: Any) -> int | str:
        return int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")

    name = f"{x.name}_u8"
    scale = (1.0 / np.asarray(std, dtype=np.float32)).reshape(1, 3, 1, 1)
    offset = (-np.asarray(mean, dtype=np.float32) * scale.reshape(3)).reshape(1, 3, 1, 1).astype(np.float32)
    nodes = [
        helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", [f"{name}_f"], [f"{name}_chw"], perm=[0, 3, 1, 2]),
        helper.make_node("Mul", [f"{name}_chw", f"{name}_scale"], [f"{name}_scaled"]),
        helper.make_node("Add", [f"{name}_scaled", f"{name}_offset"], [x.name]),
    ]
    graph.initializer.extend(
        [numpy_helper.from_array(scale, f"{name}_scale"), numpy_helper.from_array(offset, f"{name}_offset")]
    )
    new_input = helper.make_tensor_value_info(
        name, TensorProto.UINT8, [dim(dims[0]), dim(dims[2]), dim(dims[3]), 3]
    )
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old_nodes)
    graph.input.remove(x)
    graph.input.insert(0, new_input)
    data: bytes = model.SerializeToString()
    return data
