"""The decoder step of Pisar's greedy loop, two ways: shapes that follow the batch, or fixed shapes a CUDA graph can hold.

``EagerSteps`` is the plain loop: the self-attention cache read up to the current step, ended rows
dropped outright at each look. Every step launches each layer's kernels from Python, which is what
a step costs on a GPU (the decoder is launch-bound, docs/performance.md).

``StaticSteps`` keeps every shape fixed so that a step can be captured once as a CUDA graph and
replayed with one launch: the rows come in buckets (powers of two), the step index is a device
tensor, the cache is read at its full length under a mask (positions after the step never count:
their weight is exactly zero), and the buffers are allocated once for the largest bucket and kept
across batches, the smaller buckets being views of their leading rows. Ended rows stay in the bucket
until the live ones fit a smaller one; then the live rows move to the front and the smaller graph
runs. On CUDA each bucket's graph is captured at its first use (``torch.cuda.graph``, one memory
pool for all of them); elsewhere the same fixed-shape step runs as it is, which is how the CPU
tests hold it to the plain loop and to generate().
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional

SMALLEST_BUCKET = 8


def bucket(rows: int) -> int:
    """The fixed row count that holds ``rows``: a power of two, at least ``SMALLEST_BUCKET``."""
    size = SMALLEST_BUCKET
    while size < rows:
        size *= 2
    return size


def split_heads(projected: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, length, width) -> (batch, heads, length, head width)."""
    batch, length, width = projected.shape
    return projected.view(batch, length, heads, width // heads).transpose(1, 2)


def merge_heads(out: torch.Tensor) -> torch.Tensor:
    """(batch, heads, 1, head width) -> (batch, 1, width)."""
    batch, heads, length, width = out.shape
    return out.transpose(1, 2).reshape(batch, length, heads * width)


def _after_self_attention(
    layer: Any, hidden: torch.Tensor, attended: torch.Tensor, cross: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """The rest of a post-norm ``TrOCRDecoderLayer`` after self-attention: cross-attention, feed-forward."""
    attention = layer.self_attn
    hidden = layer.self_attn_layer_norm(hidden + attention.out_proj(merge_heads(attended)))
    attention = layer.encoder_attn
    query = split_heads(attention.q_proj(hidden) * attention.scaling, attention.num_heads)
    out = functional.scaled_dot_product_attention(query, cross[0], cross[1], scale=1.0)
    hidden = layer.encoder_attn_layer_norm(hidden + attention.out_proj(merge_heads(out)))
    return layer.final_layer_norm(hidden + layer.fc2(layer.activation_fn(layer.fc1(hidden))))


def project_cross(layers: Any, encoder_states: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's cross-attention keys and values, projected once per batch and laid out heads
    first: attention over a transposed view reads 2.3x slower on a CPU (bench/decode_step.py), at every step."""
    return [
        (
            split_heads(layer.encoder_attn.k_proj(encoder_states), layer.encoder_attn.num_heads).contiguous(),
            split_heads(layer.encoder_attn.v_proj(encoder_states), layer.encoder_attn.num_heads).contiguous(),
        )
        for layer in layers
    ]


class EagerSteps:
    """A batch's steps with shapes that follow it: the cache grows per step, ended rows leave at once."""

    def __init__(self, loop: Any, encoder_states: torch.Tensor, steps: int) -> None:
        self.loop = loop
        layers = loop.decoder.layers
        batch, device, dtype = encoder_states.shape[0], encoder_states.device, encoder_states.dtype
        attention = layers[0].self_attn
        shape = (batch, attention.num_heads, steps, attention.head_dim)
        self.cross = project_cross(layers, encoder_states)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in layers]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in layers]
        self.width = batch

    def width_for(self, live: int) -> int:
        return live

    def logits(self, current: torch.Tensor, step: int) -> torch.Tensor:
        """(width, vocabulary) float32 logits of one step."""
        return self.loop.causal_lm.output_projection(self.hidden(current, step)).float()

    def hidden(self, current: torch.Tensor, step: int) -> torch.Tensor:
        """(width, model width) final decoder states of one step, before the output projection."""
        hidden = self.loop.embed(current, step)
        for index, layer in enumerate(self.loop.decoder.layers):
            attention = layer.self_attn
            heads = attention.num_heads
            query = split_heads(attention.q_proj(hidden) * attention.scaling, heads)
            self.keys[index][:, :, step] = split_heads(attention.k_proj(hidden), heads)[:, :, 0]
            self.values[index][:, :, step] = split_heads(attention.v_proj(hidden), heads)[:, :, 0]
            keys, values = self.keys[index][:, :, : step + 1], self.values[index][:, :, : step + 1]
            attended = functional.scaled_dot_product_attention(query, keys, values, scale=1.0)
            hidden = _after_self_attention(layer, hidden, attended, self.cross[index])
        return hidden[:, 0]

    def keep(self, live: torch.Tensor, width: int) -> None:
        """Keep only the rows ``live`` (``width`` is their count)."""
        self.keys = [k[live] for k in self.keys]
        self.values = [v[live] for v in self.values]
        self.cross = [(k[live], v[live]) for k, v in self.cross]
        self.width = width


class StaticBuffers:
    """Fixed-shape decoder state for up to ``capacity`` rows, kept across batches, with one CUDA graph per bucket when ``capture``."""

    def __init__(self, loop: Any, capacity: int, steps: int, encoder_length: int, dtype: torch.dtype, device: torch.device) -> None:
        self.loop = loop
        self.key = (capacity, steps, encoder_length, dtype, device)
        self.capacity, self.steps = capacity, steps
        self.capture = device.type == "cuda"
        layers = loop.decoder.layers
        attention = layers[0].self_attn
        heads, head_dim = attention.num_heads, attention.head_dim

        def zeros(length: int) -> torch.Tensor:  # zeros, not empty: a masked position's value still enters 0 x value
            return torch.zeros((capacity, heads, length, head_dim), device=device, dtype=dtype)

        self.keys = [zeros(steps) for _ in layers]
        self.values = [zeros(steps) for _ in layers]
        self.cross = [(zeros(encoder_length), zeros(encoder_length)) for _ in layers]
        self.current = torch.zeros(capacity, dtype=torch.long, device=device)
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.positions = torch.arange(steps, device=device)
        self.sinusoids = loop.sinusoid_table(steps, device)
        self.out = torch.zeros((capacity, loop.config.vocab_size), dtype=torch.float32, device=device)
        self.graphs: dict[int, Any] = {}
        self.pool = torch.cuda.graph_pool_handle() if self.capture else None

    def fits(self, batch: int, steps: int, encoder_length: int, dtype: torch.dtype, device: torch.device) -> bool:
        capacity, held_steps, length, held_dtype, held_device = self.key
        return batch <= capacity and (held_steps, length, held_dtype, held_device) == (steps, encoder_length, dtype, device)

    def compute(self, width: int) -> None:
        """One step for the leading ``width`` rows, from ``current`` and ``step`` into ``out``; no host sync, no shape that varies."""
        hidden = self.loop.embed_static(self.current[:width], self.step, self.sinusoids)
        visible = (self.positions <= self.step).view(1, 1, 1, -1)
        for index, layer in enumerate(self.loop.decoder.layers):
            attention = layer.self_attn
            heads = attention.num_heads
            query = split_heads(attention.q_proj(hidden) * attention.scaling, heads)
            keys, values = self.keys[index][:width], self.values[index][:width]
            keys.index_copy_(2, self.step.view(1), split_heads(attention.k_proj(hidden), heads))
            values.index_copy_(2, self.step.view(1), split_heads(attention.v_proj(hidden), heads))
            attended = functional.scaled_dot_product_attention(query, keys, values, attn_mask=visible, scale=1.0)
            cross = (self.cross[index][0][:width], self.cross[index][1][:width])
            hidden = _after_self_attention(layer, hidden, attended, cross)
        self.out[:width].copy_(self.loop.causal_lm.output_projection(hidden[:, 0]))

    def run(self, width: int) -> torch.Tensor:
        """The step's logits for the leading ``width`` rows: the bucket's graph replayed on CUDA, the step itself elsewhere."""
        if not self.capture:
            self.compute(width)
        else:
            graph = self.graphs.get(width)
            if graph is None:
                graph = self.graphs[width] = self._captured(width)
            graph.replay()
        return self.out[:width]

    def _captured(self, width: int) -> Any:
        """The bucket's graph. Warm-up runs on a side stream first, as capture requires; a run writes
        only the current step's cache entries from the current inputs, so warming up and capturing
        in the middle of a batch change nothing the replay will not write again."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.compute(width)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self.compute(width)
        return graph


class StaticSteps:
    """A batch's steps on the kept ``StaticBuffers``: rows in buckets, ended rows kept until the live ones fit a smaller bucket."""

    def __init__(self, buffers: StaticBuffers, encoder_states: torch.Tensor) -> None:
        self.buffers = buffers
        batch = encoder_states.shape[0]
        for (keys, values), (new_keys, new_values) in zip(
            buffers.cross, project_cross(buffers.loop.decoder.layers, encoder_states), strict=True
        ):
            keys[:batch].copy_(new_keys)
            values[:batch].copy_(new_values)
        self.width = bucket(batch)

    def width_for(self, live: int) -> int:
        return bucket(live)

    def logits(self, current: torch.Tensor, step: int) -> torch.Tensor:
        self.buffers.current[: self.width].copy_(current)
        self.buffers.step.fill_(step)
        return self.buffers.run(self.width)

    def keep(self, live: torch.Tensor, width: int) -> None:
        """Move the rows ``live`` to the front of every buffer; ``width``: the smaller bucket that now runs."""
        count = len(live)
        held = self.buffers
        for tensor in [*held.keys, *held.values, *(t for pair in held.cross for t in pair)]:
            tensor[:count] = tensor[live]
        self.width = width
