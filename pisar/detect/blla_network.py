"""kraken's baseline segmentation network in plain torch, built from its CoreML file.

kraken ships its default segmenter as ``blla.mlmodel`` (CoreML protobuf, ~1.3 M parameters): the
VGSL string that describes the network and the class mapping are in the file's metadata, the
weights in its layers. kraken's own loader (``kraken.lib.vgsl``) imports torchvision and lightning,
and PyPI's torchvision does not import beside the CPU torch build this project pins ("operator
torchvision::nms does not exist"), so Pisar builds the same network here and uses kraken only for
the post-processing. Checked against kraken's own ``blla.segment`` in a separate venv where it runs
(torch 2.9.1 with torchvision): the heatmap matched to 1.3e-5, and the same 51 lines come out on
the Transkribus page of ``tests/data/pages``.

Only the layers a segmentation VGSL uses are known: ``Cr``/``Cl``/``Cs``/``Ct`` convolutions,
``Gn`` group norm, ``L[fb][xy]`` LSTMs over rows or columns, and the ``O2l`` 1x1 output. Any other
layer is refused by name (``UnsupportedSegmenter``), never silently skipped.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pisar.errors import FatalError


class UnsupportedSegmenter(FatalError):
    """The segmentation model holds a layer or format this module does not build."""


@dataclass(frozen=True)
class SegmenterSpec:
    """What a kraken segmentation model says about itself: its input, classes and metadata."""

    vgsl: str
    height: int  # the network's input height in pixels (1,800 for blla); 0 keeps the scan's
    channels: int  # 1 (grayscale) or 3 (RGB)
    class_mapping: dict[str, dict[str, int]]
    bounding_regions: tuple[str, ...]
    topline: bool | None  # False: the model finds baselines (blla)


_CONV = re.compile(r"^C([srtl]){(\w+)}(\d+),(\d+),(\d+)(?:,(\d+),(\d+))?$")
_GROUP_NORM = re.compile(r"^Gn{(\w+)}(\d+)$")
_LSTM = re.compile(r"^L([fb])([xy]){(\w+)}(\d+)$")
_OUTPUT = re.compile(r"^O{(\w+)}2([lsc])(\d+)$")


class _Conv(nn.Module):
    def __init__(self, inputs: int, outputs: int, kernel: tuple[int, int], stride: tuple[int, int], activation: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(inputs, outputs, kernel, stride=stride, padding=((kernel[0] - 1) // 2, (kernel[1] - 1) // 2))
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.activation == "r":
            return torch.relu(x)
        if self.activation == "t":
            return torch.tanh(x)
        return x  # linear, and sigmoid outputs kept as logits (the caller applies the sigmoid once)


class _Lstm(nn.Module):
    """A bidirectional (or forward) LSTM run along each row (``x``) or each column (``y``), not summarised."""

    def __init__(self, inputs: int, hidden: int, bidirectional: bool, along_columns: bool) -> None:
        super().__init__()
        self.lstm = nn.LSTM(inputs, hidden, bidirectional=bidirectional, batch_first=True)
        self.along_columns = along_columns
        self.outputs = hidden * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if self.along_columns:
            sequences = x.permute(0, 3, 2, 1).reshape(n * w, h, c)
            out, _ = self.lstm(sequences)
            return out.reshape(n, w, h, self.outputs).permute(0, 3, 2, 1)
        sequences = x.permute(0, 2, 3, 1).reshape(n * h, w, c)
        out, _ = self.lstm(sequences)
        return out.reshape(n, h, w, self.outputs).permute(0, 3, 1, 2)


class BllaNetwork(nn.Module):
    """The layers of a segmentation VGSL, in order; ``forward`` gives the heatmap logits (N, classes, H', W')."""

    def __init__(self, layers: list[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.names = [name for name, _ in layers]
        self.layers = nn.ModuleList(module for _, module in layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def read_spec(path: Path) -> tuple[Any, SegmenterSpec]:
    """Parse a kraken ``.mlmodel`` file: the protobuf and what its metadata says."""
    model_pb2 = _coreml_protos()
    proto = model_pb2.Model()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as exc:
        raise UnsupportedSegmenter(f"{path}: not a CoreML model file ({type(exc).__name__})") from None
    metadata = dict(proto.description.metadata.userDefined)
    if "vgsl" not in metadata or "kraken_meta" not in metadata:
        raise UnsupportedSegmenter(f"{path}: not a kraken model (its metadata has no VGSL spec)")
    meta = json.loads(metadata["kraken_meta"])
    if meta.get("model_type") != "segmentation":
        raise UnsupportedSegmenter(f"{path}: a kraken {meta.get('model_type')!r} model, not a segmentation model")
    vgsl = metadata["vgsl"].strip()
    head = re.match(r"^\[(\d+),(\d+),(\d+),(\d+)\s", vgsl)
    if head is None:
        raise UnsupportedSegmenter(f"{path}: its VGSL spec does not start with an input block: {vgsl[:60]!r}")
    _, height, _, channels = (int(group) for group in head.groups())
    spec = SegmenterSpec(
        vgsl=vgsl,
        height=height,
        channels=channels,
        class_mapping=meta["class_mapping"],
        bounding_regions=tuple(meta.get("bounding_regions") or ()),
        topline=meta.get("topline", False),
    )
    return proto, spec


def build_network(proto: Any, spec: SegmenterSpec) -> BllaNetwork:
    """The network the VGSL string describes, with the weights of the CoreML layers of the same names."""
    layers_by_name = {layer.name: layer for layer in proto.neuralNetwork.layers}
    blocks = spec.vgsl.strip("[]").split()[1:]
    channels = spec.channels
    layers: list[tuple[str, nn.Module]] = []
    for block in blocks:
        if match := _CONV.match(block):
            activation, name, kh, kw, out, sh, sw = match.groups()
            module: nn.Module = _Conv(channels, int(out), (int(kh), int(kw)), (int(sh or 1), int(sw or 1)), activation)
            _load_conv(module.conv, layers_by_name, f"{name}_conv")
            channels = int(out)
        elif match := _GROUP_NORM.match(block):
            name, groups = match.groups()
            module = nn.GroupNorm(int(groups), channels)
            weights = layers_by_name[name].custom.weights
            module.weight.data = torch.tensor(list(weights[0].floatValue)).reshape(channels)
            module.bias.data = torch.tensor(list(weights[1].floatValue)).reshape(channels)
        elif match := _LSTM.match(block):
            direction, axis, name, hidden = match.groups()
            module = _Lstm(channels, int(hidden), direction == "b", axis == "y")
            _load_lstm(module.lstm, layers_by_name, name if axis == "x" else f"{name}_transposed", direction == "b")
            channels = module.outputs
        elif match := _OUTPUT.match(block):
            name, activation, out = match.groups()
            module = _Conv(channels, int(out), (1, 1), (1, 1), "l")
            _load_conv(module.conv, layers_by_name, f"{name}_conv")
            channels = int(out)
        else:
            raise UnsupportedSegmenter(f"the segmentation network's layer {block!r} is not one Pisar builds ({spec.vgsl})")
        layers.append((block, module))
    return BllaNetwork(layers).eval()


def _load_conv(conv: nn.Conv2d, layers: dict[str, Any], name: str) -> None:
    params = layers[name].convolution
    conv.weight.data = torch.tensor(list(params.weights.floatValue)).reshape(conv.weight.shape)
    conv.bias.data = torch.tensor(list(params.bias.floatValue)).reshape(conv.bias.shape)


def _load_lstm(lstm: nn.LSTM, layers: dict[str, Any], name: str, bidirectional: bool) -> None:
    """CoreML keeps the gates as input, forget, block input, output (torch's order) and one bias,
    which goes into ``bias_hh`` with ``bias_ih`` zero."""
    layer = layers[name]
    kind = layer.WhichOneof("layer")
    params = getattr(layer, kind).weightParams
    directions = [params[0], params[1]] if kind == "biDirectionalLSTM" else [params]
    for suffix, weights in zip(("", "_reverse"), directions[: 2 if bidirectional else 1], strict=True):
        gates = ("inputGate", "forgetGate", "blockInput", "outputGate")
        ih = torch.tensor([list(getattr(weights, f"{g}WeightMatrix").floatValue) for g in gates])
        hh = torch.tensor([list(getattr(weights, f"{g}RecursionMatrix").floatValue) for g in gates])
        bias = torch.tensor([list(getattr(weights, f"{g}BiasVector").floatValue) for g in gates])
        getattr(lstm, f"weight_ih_l0{suffix}").data = ih.reshape(getattr(lstm, f"weight_ih_l0{suffix}").shape)
        getattr(lstm, f"weight_hh_l0{suffix}").data = hh.reshape(getattr(lstm, f"weight_hh_l0{suffix}").shape)
        getattr(lstm, f"bias_hh_l0{suffix}").data = bias.reshape(-1)
        getattr(lstm, f"bias_ih_l0{suffix}").data = torch.zeros_like(bias.reshape(-1))


def heatmap(network: BllaNetwork, pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The class probabilities (classes, H, W) at the scaled scan's ``size`` (H, W): the network's
    output brought back to that size (nearest, as kraken does), then the sigmoid."""
    with torch.inference_mode():
        logits = network(pixels.unsqueeze(0))
        return torch.sigmoid(F.interpolate(logits, size=size)).squeeze(0).float()


def _coreml_protos() -> Any:
    """coremltools' protobuf classes; its import logs that its native runtime (macOS only) is absent."""
    coreml_log = logging.getLogger("coremltools")
    level = coreml_log.level
    coreml_log.setLevel(logging.CRITICAL)
    try:
        from coremltools.proto import Model_pb2
    finally:
        coreml_log.setLevel(level)
    return Model_pb2
