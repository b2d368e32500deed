"""OpenAI guided-diffusion UNet checkpoints (``256x256_diffusion_uncond.pt`` layout) as diffusers ``UNet2DModel``\\ s.

A guided-diffusion checkpoint is a bare ``state_dict`` of ``guided_diffusion.unet.UNetModel``
(the architecture deepinv's ``DiffUNet`` also builds): ``time_embed``, ``input_blocks``,
``middle_block``, ``output_blocks``, ``out``. The public unconditional ones (ImageNet 256×256,
FFHQ) use BigGAN-style up/down ResBlocks (``resblock_updown``), scale-shift norm and 64-channel
attention heads, which is diffusers' ``UNet2DModel`` with ``resnet_time_scale_shift="scale_shift"``,
``downsample_type=upsample_type="resnet"`` and ``attention_head_dim=64``; the weight names map
one to one (as in diffusers' ``convert_consistency_to_diffusers.py``, whose models share this UNet).

The architecture is read from the weights' names and shapes: levels and ResBlocks per level
from the ``output_blocks`` holding an upsampling ResBlock, widths and attention levels from
each level's first input block. With learned
variance the UNet has ``2·in_channels`` outputs, ``[ε, v]``; :class:`.components.Denoiser` takes ε.
The checkpoints were trained on the linear β schedule 1e-4…0.02 over 1000 steps.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DModel
from trt_restore.errors import UserError

CHECKPOINT_SUFFIX = ".pt"
HEAD_CHANNELS = 64
_MARKERS = ("time_embed.0.weight", "input_blocks.0.0.weight", "middle_block.1.qkv.weight", "out.2.weight")
_RESBLOCK = {
    "in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut",
}


def is_guided_diffusion(state: dict) -> bool:
    """Whether ``state`` has the names of a guided-diffusion ``UNetModel``."""
    return all(key in state for key in _MARKERS)


def unet_config(state: dict) -> dict:
    """The ``UNet2DModel`` config of a guided-diffusion state dict, read from its names and shapes.

    With ``L`` levels and ``R`` ResBlocks per level there are ``L·(R+1)`` output blocks, ``L − 1``
    of them ending in an upsampling ResBlock; level ℓ's first input block is ``1 + ℓ·(R+1)``.
    """
    if "label_emb.weight" in state:
        raise UserError("class-conditional guided-diffusion checkpoints are not supported; use an unconditional one")
    outputs = _block_count(state, "output_blocks")
    levels = 1 + sum(_has_upsampler(state, k) for k in range(outputs))
    per_level = outputs // levels - 1
    first = [1 + level * (per_level + 1) for level in range(levels)]
    if any(f"input_blocks.{i - 1}.0.op.weight" in state for i in first[1:]):
        raise UserError("guided-diffusion checkpoints without resblock_updown are not supported")
    block = f"input_blocks.{first[0]}.0"
    if state[f"{block}.emb_layers.1.weight"].shape[0] != 2 * state[f"{block}.out_layers.3.weight"].shape[0]:
        raise UserError("guided-diffusion checkpoints without use_scale_shift_norm are not supported")
    return unet_layout(
        in_channels=state["input_blocks.0.0.weight"].shape[1],
        out_channels=state["out.2.weight"].shape[0],
        block_out_channels=[state[f"input_blocks.{i}.0.out_layers.3.weight"].shape[0] for i in first],
        layers_per_block=per_level,
        attention=[f"input_blocks.{i}.1.qkv.weight" in state for i in first],
    )


def unet_layout(
    in_channels: int, out_channels: int, block_out_channels: list[int], layers_per_block: int, attention: list[bool]
) -> dict:
    """The ``UNet2DModel`` config of a guided-diffusion UNet (``resblock_updown``, scale-shift norm,
    64-channel heads) with these widths per level, ResBlocks per level and attention levels."""
    return {
        "sample_size": 256,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "block_out_channels": list(block_out_channels),
        "layers_per_block": layers_per_block,
        "down_block_types": ["AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attention],
        "up_block_types": ["AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(attention)],
        "downsample_type": "resnet",
        "upsample_type": "resnet",
        "resnet_time_scale_shift": "scale_shift",
        "attention_head_dim": HEAD_CHANNELS,
        "attn_norm_num_groups": 32,
        "norm_num_groups": 32,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }


def _block_count(state: dict, prefix: str) -> int:
    return 1 + max(int(key.split(".")[1]) for key in state if key.startswith(prefix + "."))


def _has_upsampler(state: dict, block: int) -> bool:
    """Whether output block ``block`` ends in an upsampling ResBlock (after its ResBlock and attention)."""
    return any(f"output_blocks.{block}.{j}.in_layers.0.weight" in state for j in (1, 2))


def name_pairs(config: dict) -> list[tuple[str, str, str]]:
    """``(guided-diffusion prefix, diffusers prefix, kind)`` for every module with weights of a
    ``UNet2DModel`` of ``config``; kind is ``resblock``, ``attention`` or ``plain``."""
    levels, per_level = len(config["block_out_channels"]), config["layers_per_block"]
    attention = [kind.startswith("Attn") for kind in config["down_block_types"]]
    pairs = [
        ("time_embed.0", "time_embedding.linear_1", "plain"),
        ("time_embed.2", "time_embedding.linear_2", "plain"),
        ("input_blocks.0.0", "conv_in", "plain"),
        ("middle_block.0", "mid_block.resnets.0", "resblock"),
        ("middle_block.1", "mid_block.attentions.0", "attention"),
        ("middle_block.2", "mid_block.resnets.1", "resblock"),
        ("out.0", "conv_norm_out", "plain"),
        ("out.2", "conv_out", "plain"),
    ]
    for level in range(levels):
        first = 1 + level * (per_level + 1)
        for j in range(per_level):
            pairs.append((f"input_blocks.{first + j}.0", f"down_blocks.{level}.resnets.{j}", "resblock"))
            if attention[level]:
                pairs.append((f"input_blocks.{first + j}.1", f"down_blocks.{level}.attentions.{j}", "attention"))
        if level < levels - 1:
            pairs.append((f"input_blocks.{first + per_level}.0", f"down_blocks.{level}.downsamplers.0", "resblock"))
    for up in range(levels):
        has_attention = attention[levels - 1 - up]
        for j in range(per_level + 1):
            block = up * (per_level + 1) + j
            pairs.append((f"output_blocks.{block}.0", f"up_blocks.{up}.resnets.{j}", "resblock"))
            if has_attention:
                pairs.append((f"output_blocks.{block}.1", f"up_blocks.{up}.attentions.{j}", "attention"))
            if j == per_level and up < levels - 1:
                pairs.append((f"output_blocks.{block}.{1 + has_attention}", f"up_blocks.{up}.upsamplers.0", "resblock"))
    return pairs


def to_diffusers(state: dict, config: dict) -> dict:
    """A guided-diffusion state dict under ``UNet2DModel`` names; a name it does not use is a UserError.

    An attention block's ``qkv`` (a 1×1 conv of ``3C`` outputs in the legacy order, head by
    head ``[q_h, k_h, v_h]``, each of :data:`HEAD_CHANNELS`) becomes ``to_q``, ``to_k``, ``to_v``
    (heads side by side); ``proj_out`` becomes ``to_out.0``; 1×1 convs become linear weights.
    """
    converted, used = {}, set()
    for old, new, kind in name_pairs(config):
        if kind == "attention":
            converted.update(_attention(state, old, new))
            used.update(f"{old}.{part}.{tensor}" for part in ("norm", "qkv", "proj_out") for tensor in ("weight", "bias"))
            continue
        for source, target in _tensor_names(old, new, kind):
            if source in state:
                converted[target] = state[source]
                used.add(source)
    unused = sorted(set(state) - used)
    if unused:
        raise UserError(f"guided-diffusion weights this UNet layout does not have: {', '.join(unused[:3])}")
    return converted


def _tensor_names(old: str, new: str, kind: str):
    """(guided-diffusion name, ``UNet2DModel`` name) of each weight and bias of a layer that is not attention."""
    parts = _RESBLOCK.items() if kind == "resblock" else [("", "")]
    for part_old, part_new in parts:
        for tensor in ("weight", "bias"):
            yield ".".join(filter(None, (old, part_old, tensor))), ".".join(filter(None, (new, part_new, tensor)))


def _attention(state: dict, old: str, new: str) -> dict:
    channels = state[f"{old}.norm.weight"].shape[0]
    heads = channels // HEAD_CHANNELS
    weight = state[f"{old}.qkv.weight"].reshape(heads, 3, HEAD_CHANNELS, channels)
    bias = state[f"{old}.qkv.bias"].reshape(heads, 3, HEAD_CHANNELS)
    out = {f"{new}.group_norm.weight": state[f"{old}.norm.weight"], f"{new}.group_norm.bias": state[f"{old}.norm.bias"]}
    for index, name in enumerate(("to_q", "to_k", "to_v")):
        out[f"{new}.{name}.weight"] = weight[:, index].reshape(channels, channels)
        out[f"{new}.{name}.bias"] = bias[:, index].reshape(channels)
    out[f"{new}.to_out.0.weight"] = state[f"{old}.proj_out.weight"].reshape(channels, channels)
    out[f"{new}.to_out.0.bias"] = state[f"{old}.proj_out.bias"]
    return out


def from_diffusers(unet: UNet2DModel) -> dict:
    """The guided-diffusion state dict of ``unet`` (the inverse of :func:`to_diffusers`)."""
    state, config = unet.state_dict(), dict(unet.config)
    converted = {}
    for old, new, kind in name_pairs(config):
        if kind == "attention":
            channels = state[f"{new}.group_norm.weight"].shape[0]
            heads = channels // HEAD_CHANNELS
            qkv = [state[f"{new}.{name}.weight"].reshape(heads, 1, HEAD_CHANNELS, channels) for name in ("to_q", "to_k", "to_v")]
            bias = [state[f"{new}.{name}.bias"].reshape(heads, 1, HEAD_CHANNELS) for name in ("to_q", "to_k", "to_v")]
            converted[f"{old}.norm.weight"] = state[f"{new}.group_norm.weight"]
            converted[f"{old}.norm.bias"] = state[f"{new}.group_norm.bias"]
            converted[f"{old}.qkv.weight"] = torch.cat(qkv, 1).reshape(3 * channels, channels, 1)
            converted[f"{old}.qkv.bias"] = torch.cat(bias, 1).reshape(3 * channels)
            converted[f"{old}.proj_out.weight"] = state[f"{new}.to_out.0.weight"].reshape(channels, channels, 1)
            converted[f"{old}.proj_out.bias"] = state[f"{new}.to_out.0.bias"]
            continue
        for target, source in _tensor_names(old, new, kind):
            if source in state:
                converted[target] = state[source]
    return converted


def checkpoint_file(path: Path) -> Path | None:
    """``path`` itself if it is a ``.pt`` file, or the single ``.pt`` file of a folder; else None."""
    if path.is_file():
        return path if path.suffix == CHECKPOINT_SUFFIX else None
    found = sorted(path.glob(f"*{CHECKPOINT_SUFFIX}")) if path.is_dir() else []
    return found[0] if len(found) == 1 else None


def load_guided_diffusion(path: Path) -> UNet2DModel:
    """The ``UNet2DModel`` of a guided-diffusion checkpoint file, in eval mode, float32."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's input
        raise UserError(f"{path} is not a readable PyTorch state dict ({type(error).__name__})") from None
    if not isinstance(state, dict) or not is_guided_diffusion(state):
        raise UserError(
            f"{path} is not a guided-diffusion UNet state dict (expected the keys {', '.join(_MARKERS)})"
        )
    config = unet_config(state)
    converted = to_diffusers(state, config)
    unet = UNet2DModel(**config)
    missing = sorted(set(unet.state_dict()) - set(converted))
    if missing:
        raise UserError(f"{path}: weights missing for a guided-diffusion UNet of this layout: {', '.join(missing[:3])}")
    unet.load_state_dict({key: value.float() for key, value in converted.items()})
    return unet.eval()
