"""A reference executor of frozen TensorFlow graphs (the ops of FaceNet's graph_final.pb),
node by node (in dependency order) in TensorFlow's own NHWC layout and padding rules, with no knowledge of the
network's architecture: what the FaceNet converter is checked against."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from bench.toolkit.facenet import constant


def source(name: str) -> str:
    return name.split(":")[0]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding of one dimension: (before, after), the extra one after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def padded(x: torch.Tensor, kernel: tuple[int, int], stride: int, padding: str, value: float = 0.0) -> torch.Tensor:
    """x (N, C, H, W) padded as TensorFlow pads it."""
    if padding == "VALID":
        return x
    top, bottom = same_padding(x.size(2), kernel[0], stride)
    left, right = same_padding(x.size(3), kernel[1], stride)
    return F.pad(x, (left, right, top, bottom), value=value)


def nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def conv2d(node, x, w):
    stride = list(node.attr["strides"].list.i)[1]
    kernel = (w.size(0), w.size(1))
    x = padded(nchw(x), kernel, stride, node.attr["padding"].s.decode())
    return nhwc(F.conv2d(x, w.permute(3, 2, 0, 1), stride=stride))


def pool(node, x, kind: str):
    kernel = tuple(list(node.attr["ksize"].list.i)[1:3])
    stride = list(node.attr["strides"].list.i)[1]
    padding = node.attr["padding"].s.decode()
    if kind == "max":
        return nhwc(F.max_pool2d(padded(nchw(x), kernel, stride, padding, -math.inf), kernel, stride))
    if padding != "VALID":
        raise NotImplementedError("SAME average pooling")
    return nhwc(F.avg_pool2d(nchw(x), kernel, stride))


def fused_batch_norm(node, x, scale, offset, mean, variance):
    eps = node.attr["epsilon"].f
    return (x - mean) / torch.sqrt(variance + eps) * scale + offset


def reduce_sum(node, x, axes):
    return x.sum(dim=[int(a) for a in axes.flatten().tolist()], keepdim=node.attr["keep_dims"].b)


OPS = {
    "Conv2D": conv2d,
    "BiasAdd": lambda node, x, b: x + b,
    "Relu": lambda node, x: torch.relu(x),
    "ConcatV2": lambda node, *xs: torch.cat(xs[:-1], dim=int(xs[-1])),
    "Mul": lambda node, a, b: a * b,
    "Add": lambda node, a, b: a + b,
    "MaxPool": lambda node, x: pool(node, x, "max"),
    "AvgPool": lambda node, x: pool(node, x, "avg"),
    "Reshape": lambda node, x, shape: x.reshape([int(s) for s in shape.tolist()]),
    "MatMul": lambda node, a, b: a @ b,
    "FusedBatchNorm": fused_batch_norm,
    "Square": lambda node, x: x * x,
    "Sum": reduce_sum,
    "Maximum": lambda node, a, b: torch.maximum(a, b),
    "Rsqrt": lambda node, x: torch.rsqrt(x),
}


@torch.no_grad()
def run_graph(graph, inputs: np.ndarray, output: str) -> np.ndarray:
    """The value of node `output` for the Placeholder fed `inputs` (NHWC float32)."""
    nodes = {node.name: node for node in graph.node}
    values = {}
    stack = [output]
    while stack:  # depth first: a node is evaluated once its inputs are
        node = nodes[stack[-1]]
        waiting = [source(i) for i in node.input if not i.startswith("^") and source(i) not in values]
        if waiting:
            stack.extend(waiting)
            continue
        stack.pop()
        values[node.name] = evaluate(node, values, inputs)
    return values[output].numpy()


def evaluate(node, values: dict, inputs: np.ndarray) -> torch.Tensor:
    if node.op == "Const":
        return torch.from_numpy(constant(node))
    if node.op == "Placeholder":
        return torch.from_numpy(inputs)
    return OPS[node.op](node, *[values[source(i)] for i in node.input if not i.startswith("^")])
