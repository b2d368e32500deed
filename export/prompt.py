"""The stored text conditioning of a Stable Diffusion UNet: the empty-prompt embedding.

A Stable Diffusion UNet (``UNet2DConditionModel``) takes a text embedding
``c = E_text(tokenize(prompt))`` besides ``(x_t, t)``. Restoration runs it unconditionally:
``c∅ = E_text(tokenize(""))``, the embedding classifier-free guidance uses for its
unconditional branch, is computed once with the pipeline folder's own tokenizer and text
encoder (transformers, the ``sd`` extra), exactly as diffusers' ``encode_prompt`` does
(padded to the tokenizer's ``model_max_length``, no clip skip). It is then a constant of
the model set and of the exported UNet graph, so no text encoder ships in a bundle. Its
provenance (the text encoder's class and the sha256 of its weights, the tokenizer's class)
travels with it into the model-set metadata and the bundle manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from trt_restore.errors import UserError

PROMPT_FILE = "prompt_embedding.safetensors"
TEXT_ENCODER_CLASSES = ("CLIPTextModel",)
TOKENIZER_CLASSES = ("CLIPTokenizer", "CLIPTokenizerFast")
TEXT_ENCODER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass
class PromptEmbedding:
    """A text embedding ``(1, tokens, dim)`` and where it came from (JSON-able ``provenance``)."""

    embedding: torch.Tensor
    provenance: dict

    def save(self, path: Path) -> None:
        """A safetensors file with the provenance in its metadata."""
        save_file({"embedding": self.embedding.contiguous()}, str(path), metadata={"provenance": json.dumps(self.provenance)})

    @classmethod
    def load(cls, path: Path) -> PromptEmbedding:
        """Read a file written by :meth:`save`."""
        try:
            with safe_open(str(path), "pt") as stored:
                provenance = json.loads((stored.metadata() or {}).get("provenance", "{}"))
            return cls(load_file(path)["embedding"], provenance)
        except (SafetensorError, OSError, KeyError, ValueError) as error:
            raise UserError(f"cannot read the prompt embedding {path} ({error}); save the model set again") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _component_class(root: Path, name: str, supported: tuple[str, ...], index: dict) -> str:
    """The transformers class that ``model_index.json`` names for ``name``, if supported."""
    entry = index.get(name)
    class_name = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
    if class_name not in supported:
        raise UserError(
            f"{root / 'model_index.json'}: the {name} is a '{class_name}'; supported: {', '.join(supported)}"
        )
    if not (root / name).is_dir():
        raise UserError(f"{root / name} not found; the pipeline folder needs its {name} to compute the empty-prompt embedding")
    return class_name


def empty_prompt_embedding(root: Path, index: dict) -> PromptEmbedding:
    """``c∅ = E_text(tokenize(""))`` with the tokenizer and text encoder of the pipeline folder ``root``
    (``index``: its ``model_index.json``)."""
    encoder_class = _component_class(root, "text_encoder", TEXT_ENCODER_CLASSES, index)
    tokenizer_class = _component_class(root, "tokenizer", TOKENIZER_CLASSES, index)
    try:
        import transformers
    except ImportError:
        raise UserError(
            "Stable Diffusion folders need transformers to compute the empty-prompt embedding; "
            "`pip install trt-restore[sd]`"
        ) from None
    weights = next((root / "text_encoder" / name for name in TEXT_ENCODER_WEIGHTS if (root / "text_encoder" / name).is_file()), None)
    if weights is None:
        raise UserError(f"{root / 'text_encoder' / TEXT_ENCODER_WEIGHTS[0]} not found; the text encoder has no weights")
    progress_bar = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # a CLI prints one line per problem, nothing else
    try:
        tokenizer = getattr(transformers, tokenizer_class).from_pretrained(root / "tokenizer")
        encoder = getattr(transformers, encoder_class).from_pretrained(root / "text_encoder").eval()
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"cannot load the text encoder or tokenizer of {root} ({error})") from None
    finally:
        if progress_bar:
            transformers.utils.logging.enable_progress_bar()
    tokens = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
    mask = tokens.attention_mask if getattr(encoder.config, "use_attention_mask", False) else None
    with torch.no_grad():
        embedding = encoder(tokens.input_ids, attention_mask=mask)[0].float()
    provenance = {
        "prompt": "",
        "text_encoder": encoder_class,
        "text_encoder_weights": f"text_encoder/{weights.name}",
        "text_encoder_sha256": _sha256(weights),
        "tokenizer": tokenizer_class,
        "tokens": int(embedding.shape[1]),
    }
    return PromptEmbedding(embedding, provenance)
