"""Scaled-dot-product attention for the TrOCR decoder, which transformers runs in eager mode only.

TrOCR's attention (self- and cross-attention to all encoder states) is written as bmm, softmax,
bmm. It materialises a (batch x heads, tokens, encoder states) weight tensor at every step of every
layer, and it ignores ``attn_implementation``. ``use_sdpa`` gives each ``TrOCRAttention`` a
forward that uses ``torch.nn.functional.scaled_dot_product_attention``. SDPA picks a fused kernel
(flash or memory-efficient on CUDA, a fused CPU kernel). The projections, the cache handling and
the outputs are unchanged, so saved models and parity with the model card's loop are unaffected
(tested in fp32). Attention weights are only computed when asked for; then the original forward runs.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch.nn import functional


def use_sdpa(model: torch.nn.Module) -> int:
    """Switch every TrOCR attention module of ``model`` to SDPA; returns how many were switched."""
    from transformers.models.trocr.modeling_trocr import TrOCRAttention

    switched = 0
    for module in model.modules():
        if isinstance(module, TrOCRAttention) and not hasattr(module, "_eager_forward"):
            module._eager_forward = module.forward
            module.forward = types.MethodType(_sdpa_forward, module)
            switched += 1
    return switched


def _sdpa_forward(
    self: Any,
    hidden_states: torch.Tensor,
    key_value_states: torch.Tensor | None = None,
    cache: Any = None,
    attention_mask: torch.Tensor | None = None,
    output_attentions: bool | None = False,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """``TrOCRAttention.forward`` (transformers 5) with the weights step fused by SDPA."""
    from transformers.cache_utils import EncoderDecoderCache

    if output_attentions or self.training:
        return self._eager_forward(hidden_states, key_value_states, cache, attention_mask, output_attentions, **kwargs)
    if cache is None and "past_key_values" in kwargs:  # the deprecated name, as the original accepts it
        cache = kwargs.pop("past_key_values")
    is_cross_attention = key_value_states is not None
    bsz, tgt_len, embed_dim = hidden_states.size()
    query = (self.q_proj(hidden_states) * self.scaling).view(bsz, tgt_len, self.num_heads, self.head_dim).transpose(1, 2)

    is_updated = False
    current_cache = cache
    if cache is not None and isinstance(cache, EncoderDecoderCache):
        is_updated = cache.is_updated.get(self.layer_idx)
        current_cache = cache.cross_attention_cache if is_cross_attention else cache.self_attention_cache
    current_states = key_value_states if is_cross_attention else hidden_states
    if is_cross_attention and cache is not None and is_updated:
        key = current_cache.layers[self.layer_idx].keys
        value = current_cache.layers[self.layer_idx].values
    else:
        key = self.k_proj(current_states).view(bsz, -1, self.num_heads, self.head_dim).transpose(1, 2)
        value = self.v_proj(current_states).view(bsz, -1, self.num_heads, self.head_dim).transpose(1, 2)
        if cache is not None:
            key, value = current_cache.update(key, value, self.layer_idx, kwargs=kwargs)
            if is_cross_attention and isinstance(cache, EncoderDecoderCache):
                cache.is_updated[self.layer_idx] = True

    mask = attention_mask
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(query.dtype)
    # The query is already scaled (as in the original), so SDPA must not scale again.
    output = functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, scale=1.0)
    output = output.transpose(1, 2).reshape(bsz, tgt_len, embed_dim)
    return self.out_proj(output), None
