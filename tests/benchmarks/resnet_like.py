"""A ResNet-18-class classifier for the benchmarks, built with onnx.helper (no torch): a 7x7 stem,
max pooling, four stages of two basic blocks (3x3, 3x3, identity or 1x1 projection shortcut) at
64-128-256-512 channels, global pooling and a linear head, at 224 px with random weights and a
dynamic batch. Only its cost matters: about 1.8 G multiply-adds per image, like the real one.
Batch norm is folded into the convolutions' biases, as an export for inference does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tests.benchmarks.mobilenet_like import save_classifier

STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, stride of the stage's first block)


def build(path: Path, classes: int = 6, size: int = 224, width: float = 1.0) -> Path:
    """Write the model to `path`; `width` scales every stage's channels."""
    rng = np.random.default_rng(0)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    counter = [0]

    def name(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def conv(x: str, cin: int, cout: int, k: int, stride: int, relu: bool = True, gain: float = 1.0) -> str:
        w, b, y = name("w"), name("b"), name("conv")
        weights = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k)) * gain
        inits.append(numpy_helper.from_array(weights.astype(np.float32), w))
        inits.append(numpy_helper.from_array((rng.standard_normal(cout) * 0.01).astype(np.float32), b))
        nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[k // 2] * 4))  # fmt: skip
        if not relu:
            return y
        z = name("relu")
        nodes.append(helper.make_node("Relu", [y], [z]))
        return z

    def ch(c: int) -> int:
        return max(8, round(c * width / 8) * 8)

    x = conv("images", 3, ch(64), 7, 2)
    nodes.append(
        helper.make_node("MaxPool", [x], ["pool0"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
    )
    x, cin = "pool0", ch(64)
    for c, stride in STAGES:
        cout = ch(c)
        for block in range(2):
            s = stride if block == 0 else 1
            h = conv(x, cin, cout, 3, s)
            h = conv(h, cout, cout, 3, 1, relu=False, gain=0.5)  # keeps activations in FP16's range
            short = conv(x, cin, cout, 1, s, relu=False) if (s != 1 or cin != cout) else x
            added, out = name("add"), name("relu")
            nodes += [helper.make_node("Add", [h, short], [added]), helper.make_node("Relu", [added], [out])]
            x, cin = out, cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    fc = (rng.standard_normal((cin, classes)) * np.sqrt(1.0 / cin)).astype(np.float32)
    inits += [
        numpy_helper.from_array(fc, "fc_w"),
        numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b"),
    ]
    nodes += [
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
    ]
    return save_classifier(nodes, inits, "resnet18_like", size, classes, path)
