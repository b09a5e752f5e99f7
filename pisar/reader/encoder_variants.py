"""The encoder variants of the torch back-end: a compiled encoder, FP8 linears.

Each is recorded in the back-end's description, which every shard stores, so a reading can be
traced to the code path that made it. The encoder variants are off by default: compilation has to
pay for its warm-up on the campaign's batch sizes, and FP8 changes the numbers, so each waits for
figures from a GPU (bench/gpu.sh) before it becomes a default.
"""

from __future__ import annotations

from typing import Any

import torch

from pisar.errors import FatalError
from pisar.reader.options import DecodeOptions

FP8_CAPABILITY = (8, 9)  # the first CUDA compute capability with FP8 tensor cores (Ada); Hopper is 9.0


def prepare_encoder(model: Any, device: torch.device, options: DecodeOptions) -> str:
    """Apply the encoder variants in place (FP8 first, then compilation); returns their suffix for the description."""
    suffix = ""
    if options.encoder_fp8:
        quantize_fp8(model.encoder, device)
        suffix += "+fp8-encoder"
    if options.compile_encoder:
        model.encoder.compile(dynamic=False)  # one graph per batch shape: a shard's batches come in few sizes
        suffix += "+compiled-encoder"
    return suffix


def quantize_fp8(encoder: Any, device: torch.device) -> None:
    """The encoder's linear layers as FP8 weights with dynamic FP8 activations (torchao), per row.

    Refused, as a ``FatalError`` naming what is missing, where it cannot run: the node must not take
    work it would read with a different model than the one asked for.
    """
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < FP8_CAPABILITY:
        raise FatalError("PISAR_ENCODER_FP8 needs a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper, Blackwell)")
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_
    except ImportError as exc:
        raise FatalError("PISAR_ENCODER_FP8 needs torchao: pip install torchao") from exc
    quantize_(encoder, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
