"""Training aids that teach a new model where each letter is: sinusoidal encoder positions and a CTC loss.

A freshly initialised VisionEncoderDecoderModel learns slowly which columns hold which letter: its
learned position embeddings start about 30 times weaker than the patch embeddings, and cross-attention
must discover the left-to-right alignment on its own (on 2 CPU cores it had not after 3,000 steps).
Two standard remedies fix that without changing the saved architecture:

- the encoder's position table starts as sinusoids at the patch embeddings' scale, so attention can
  tell neighbouring columns apart from the first step;
- hybrid CTC/attention training (Watanabe et al., 2017): a CTC loss on the encoder's columns forces
  localised, ordered letter features, which the decoder's cross-attention then only has to find.

The CTC head is a training-only layer: the saved model is a plain VisionEncoderDecoderModel, loaded
and run like any other.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def pair(value: Any) -> tuple[int, int]:
    """(height, width) from a size that configs give as one number or two."""
    return (int(value[0]), int(value[1])) if isinstance(value, list | tuple) else (int(value), int(value))


def patch_grid(encoder_config: Any, pixel_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """(rows, columns) of patches for images of ``pixel_size`` (default: the config's image size).

    DINOv2 configs say a square image size and interpolate their position table to the processor's
    182 x 1022 lines, so the real grid comes from the pixels, not from the config.
    """
    (height, width), (patch_h, patch_w) = pixel_size or pair(encoder_config.image_size), pair(encoder_config.patch_size)
    return height // patch_h, width // patch_w


def sinusoids(positions: int, dims: int) -> torch.Tensor:
    """The transformer's sine/cosine table, ``positions x dims``, values in [-1, 1]."""
    index = torch.arange(positions, dtype=torch.float32)[:, None]
    rates = torch.exp(torch.arange(0, dims, 2, dtype=torch.float32) * (-math.log(1000.0) / dims))
    table = torch.zeros(positions, dims)
    table[:, 0::2] = torch.sin(index * rates)
    table[:, 1::2] = torch.cos(index * rates[: dims // 2])
    return table


def init_sinusoidal_positions(model: Any) -> None:
    """Overwrite the encoder's learned position table with sinusoids as strong as its patch embeddings.

    One row of patches gets a 1-D table over columns; a grid gets half the channels for rows, half for
    columns. Class and register tokens keep a zero position. The table stays trainable.
    """
    embeddings = model.encoder.embeddings
    table = embeddings.position_embeddings  # (1, prefix + rows * cols, hidden)
    rows, cols = patch_grid(model.config.encoder)
    hidden = table.shape[-1]
    if rows == 1:
        grid = sinusoids(cols, hidden)
    else:
        half = hidden // 2
        grid = torch.cat(
            [
                sinusoids(rows, half)[:, None, :].expand(rows, cols, half),
                sinusoids(cols, hidden - half)[None, :, :].expand(rows, cols, hidden - half),
            ],
            dim=-1,
        ).reshape(rows * cols, hidden)
    with torch.no_grad():
        probe = torch.zeros(1, *_pixel_shape(model.config.encoder))
        scale = float(embeddings.patch_embeddings(probe.normal_()).std())  # what the patch features measure
        prefix = table.shape[1] - rows * cols
        table[0, :prefix].zero_()
        table[0, prefix:].copy_(grid * scale * math.sqrt(2))  # a sinusoid's std is 1/sqrt(2)


def _pixel_shape(encoder_config: Any) -> tuple[int, int, int]:
    return (int(encoder_config.num_channels), *pair(encoder_config.image_size))


class CTCHead(nn.Module):
    """A linear letter classifier over the encoder's columns, trained with CTC beside the decoder's loss."""

    def __init__(self, encoder_config: Any, vocab_size: int) -> None:
        super().__init__()
        self.encoder_config = encoder_config
        self.blank = vocab_size
        self.classify = nn.Linear(encoder_config.hidden_size, vocab_size + 1)

    def columns(self, encoder_states: torch.Tensor, pixel_size: tuple[int, int]) -> torch.Tensor:
        """(batch, cols, hidden): patch states without class/register tokens, averaged over rows."""
        rows, cols = patch_grid(self.encoder_config, pixel_size)
        patches = encoder_states[:, encoder_states.shape[1] - rows * cols :]
        return patches.reshape(patches.shape[0], rows, cols, -1).mean(dim=1)

    def loss(self, encoder_states: torch.Tensor, pixel_size: tuple[int, int], labels: torch.Tensor, skip_ids: set[int]) -> torch.Tensor:
        """CTC loss of the label ids (padding and ``skip_ids`` such as end-of-text removed)."""
        log_probs = self.classify(self.columns(encoder_states, pixel_size)).log_softmax(-1).transpose(0, 1)  # (T, B, C)
        targets = [[t for t in row.tolist() if t >= 0 and t not in skip_ids] for row in labels]
        lengths = torch.tensor([len(t) for t in targets])
        flat = torch.tensor([t for row in targets for t in row], dtype=torch.long)
        frames = torch.full((len(targets),), log_probs.shape[0], dtype=torch.long)
        # zero_infinity: a line with more letters than columns contributes nothing instead of inf.
        return nn.functional.ctc_loss(log_probs, flat, frames, lengths, blank=self.blank, zero_infinity=True)
