"""Whole-image keys and values for the spatial self-attention blocks of a tiled network.

A UNet's or autoencoder's attention block (diffusers ``Attention`` with a GroupNorm, fed a
feature map ``h``) attends over every position of what it is given, so a tile attends over
the tile only. :class:`WholeImageAttention` lets a tile attend over the whole image: besides
its own positions it takes ``M`` context tokens ``c_j`` (the whole image's feature map at
that block, pooled to at most ``M`` positions, from pass 1 of a tiled run) with logit offsets
``b_j``:

    out_p = Σ_q softmax_q(⟨W_q ĥ_p, W_k ĥ_q⟩ / √d) W_v ĥ_q,   q ∈ own positions ∪ context tokens,

where ``ĥ`` is the block's GroupNorm output and the context tokens are normalised with the
same statistics as the tile. ``b_j = log m_j`` counts how many image positions outside the
tile token ``j`` stands for (the proportional attention of token merging, Bolya et al. 2023,
exact when ``m_j = 1``); ``b_j = −∞`` drops a token (positions inside the tile, which the tile
supplies itself, and padding). With every ``b_j = −∞`` the block is the plain one, which is
how untiled runs and pass 1 call it. Each layer reports its input feature map, from which
the tiled runner assembles the next call's context (:mod:`trt_restore.runtime.tiling`).

The processor is the plain diffusers one whenever no :class:`~.group_stats.GroupStats`
wrapper is running the network. Cross-attention (text-conditioned UNets) is left as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
from torch import nn


def is_spatial_self_attention(module: nn.Module) -> bool:
    """Whether ``module`` is a self-attention block over a feature map, with its own GroupNorm."""
    return isinstance(module, Attention) and module.group_norm is not None and not module.is_cross_attention


class WholeImageAttention:
    """The attention processor of the module docstring; ``context`` is the network's
    :class:`~.group_stats.StatsContext`, which hands out the context tokens layer by layer."""

    def __init__(self, context):
        self.context = context
        self.plain = AttnProcessor2_0()
        self.explicit = False  # the written-out form (:meth:`_written_out`) outside ONNX export too (a VJP's trace)

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        context = self.context
        if context.stats is None or encoder_hidden_states is not None or hidden_states.dim() != 4:
            return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        batch, channels, height, width = hidden_states.shape
        context.reported_context.append(hidden_states)
        tokens, offsets = context.next_attention_context()  # (B, C, M), (B, M)
        own = attn.group_norm(hidden_states.reshape(batch, channels, height * width))  # StatsGroupNorm
        others = attn.group_norm.normalise_like_last(tokens.to(own.dtype))
        keys_in = torch.cat((own, others), -1).transpose(1, 2)
        query = attn.to_q(own.transpose(1, 2)).float()
        key, value = attn.to_k(keys_in).float(), attn.to_v(keys_in).float()
        bias = torch.cat((offsets.new_zeros(batch, height * width), offsets.float()), -1)  # (B, S + M)
        heads, head_dim = attn.heads, attn.inner_dim // attn.heads  # Python ints: constants in a traced graph
        if self.explicit or torch.onnx.is_in_onnx_export():
            out = self._written_out(query, key, value, bias, heads, head_dim)
        else:
            out = self._fused(query, key, value, bias, heads, head_dim)
        out = attn.to_out[1](attn.to_out[0](out.to(hidden_states.dtype)))
        out = out.transpose(1, 2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor

    @staticmethod
    def _fused(query, key, value, bias, heads: int, head_dim: int) -> torch.Tensor:
        """torch's fused attention with the offsets as an additive mask (eager runs)."""
        batch = query.shape[0]
        query, key, value = (t.reshape(batch, -1, heads, head_dim).transpose(1, 2) for t in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias[:, None, None, :])
        return out.transpose(1, 2).reshape(batch, -1, heads * head_dim)

    @staticmethod
    def _written_out(query, key, value, bias, heads: int, head_dim: int) -> torch.Tensor:
        """The same attention as plain matmuls and a softmax, for exported graphs, with the offsets
        carried by one more query/key dimension, ``q' = [q, 1]`` and ``k' = [k, b·√d]``, so that
        ``q'·k' / √d = q·k / √d + b``: no mask, so onnxruntime fuses it like any attention
        (``runtime/onnx_fusion.py``), and it traces into ordinary ops for a VJP."""
        batch = query.shape[0]
        ones = query.new_ones(batch, query.shape[1], heads, 1)
        carried = (bias * head_dim**0.5)[:, :, None, None].expand(-1, -1, heads, 1)
        query = torch.cat((query.reshape(batch, -1, heads, head_dim), ones), -1).reshape(batch, -1, heads * (head_dim + 1))
        key = torch.cat((key.reshape(batch, -1, heads, head_dim), carried), -1).reshape(batch, -1, heads * (head_dim + 1))
        root = head_dim**-0.25  # √(1/√d) on each side, as torch's exporter writes the scale
        query = query.reshape(batch, -1, heads, head_dim + 1).permute(0, 2, 1, 3) * root
        key = key.reshape(batch, -1, heads, head_dim + 1).permute(0, 2, 3, 1) * root
        value = value.reshape(batch, -1, heads, head_dim).permute(0, 2, 1, 3)
        out = torch.softmax(query @ key, -1) @ value
        return out.permute(0, 2, 1, 3).reshape(batch, -1, heads * head_dim)


def install(network: nn.Module, context) -> int:
    """Give ``network``'s spatial self-attention blocks :class:`WholeImageAttention`; returns how many."""
    count = 0
    for module in network.modules():
        if is_spatial_self_attention(module):
            module.set_processor(WholeImageAttention(context))
            count += 1
    return count


def explicit_attention(module: nn.Module) -> None:
    """Attention blocks of ``module`` in the explicit form an exported graph needs (scores and
    softmax written out, in float32): :class:`WholeImageAttention` stays, the others get
    diffusers' ``AttnProcessor`` with its upcasts."""
    for attention in module.modules():
        if not isinstance(attention, Attention):
            continue
        if isinstance(attention.processor, WholeImageAttention):
            attention.processor.explicit = True
        else:
            attention.upcast_attention = attention.upcast_softmax = True
            attention.set_processor(AttnProcessor())
