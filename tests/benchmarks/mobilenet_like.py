"""A MobileNetV3-Large-class classifier for the benchmarks, built with onnx.helper: the same
shape of network (a 3x3 stem, inverted residual blocks of 1x1 expand, 3x3 depthwise, 1x1
project with hard-swish, global pooling, a 1280 head) at 224 px, with random weights. Only its
cost matters here: about 0.2 G multiply-adds per image, like the real one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (expansion, out channels, stride) per block, after MobileNetV3-Large's table.
BLOCKS = [
    (1, 16, 1), (4, 24, 2), (3, 24, 1), (3, 40, 2), (3, 40, 1), (3, 40, 1), (6, 80, 2), (2.5, 80, 1),
    (2.3, 80, 1), (2.3, 80, 1), (6, 112, 1), (6, 112, 1), (6, 160, 2), (6, 160, 1), (6, 160, 1),
]  # fmt: skip


def build(path: Path, classes: int = 6, size: int = 224, width: float = 1.0) -> Path:
    """Write the model to `path`; `width` scales every block's channels (MobileNet's multiplier)."""
    rng = np.random.default_rng(0)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    counter = [0]

    def name(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def conv(
        x: str, cin: int, cout: int, k: int, stride: int, group: int = 1, act: str | None = "HardSwish"
    ) -> str:
        w = name("w")
        fan_in = cin // group * k * k
        weights = rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)
        inits.append(numpy_helper.from_array(weights.astype(np.float32), w))
        b = name("b")
        inits.append(numpy_helper.from_array(np.zeros(cout, dtype=np.float32), b))
        y = name("conv")
        nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[k // 2] * 4, group=group))  # fmt: skip
        if act is None:
            return y
        z = name("act")
        nodes.append(helper.make_node(act, [y], [z]))
        return z

    x = conv("images", 3, 16, 3, 2)
    cin = 16
    for i, (exp, c, stride) in enumerate(BLOCKS):
        cout = max(8, round(c * width / 8) * 8)
        act = "Relu" if i < 6 else "HardSwish"  # as in MobileNetV3: ReLU early, hard-swish late
        mid = round(cin * exp)
        h = conv(x, cin, mid, 1, 1, act=act) if mid != cin else x
        h = conv(h, mid, mid, 3, stride, group=mid, act=act)
        h = conv(h, mid, cout, 1, 1, act=None)
        if stride == 1 and cin == cout:
            s = name("add")
            nodes.append(helper.make_node("Add", [h, x], [s]))
            h = s
        x, cin = h, cout
    x = conv(x, cin, 960, 1, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"]))
    for tag, (a, b) in {"fc1": (960, 1280), "fc2": (1280, classes)}.items():
        inits.append(
            numpy_helper.from_array((rng.standard_normal((a, b)) * 0.02).astype(np.float32), f"{tag}_w")
        )
        inits.append(numpy_helper.from_array(np.zeros(b, dtype=np.float32), f"{tag}_b"))
    nodes += [
        helper.make_node("Gemm", ["flat", "fc1_w", "fc1_b"], ["h1"]),
        helper.make_node("HardSwish", ["h1"], ["h2"]),
        helper.make_node("Gemm", ["h2", "fc2_w", "fc2_b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
    ]
    return save_classifier(nodes, inits, "mobilenet_like", size, classes, path)


def save_classifier(
    nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], name: str, size: int, classes: int, path: Path
) -> Path:
    """Save a graph from `images` (n, 3, size, size) to `scores` (n, classes) as a checked model
    onnxruntime 1.31 loads (IR version 8)."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 3, size, size])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", classes])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path
