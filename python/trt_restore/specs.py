"""Named tensor and component descriptions shared by export, the engine builder and the runtime.

A shape entry is an int (fixed) or a symbol: ``"B"`` (batch), ``"H"``/``"W"`` (image
height and width) or a symbol divided by an integer, e.g. ``"H/8"`` for a latent of
a VAE with downsampling factor 8. :meth:`TensorSpec.resolve` turns a symbolic shape
into ints for a given batch and image size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

Dim = int | str


def _resolve_dim(dim: Dim, sizes: dict[str, int]) -> int:
    if isinstance(dim, int):
        return dim
    symbol, _, divisor = dim.partition("/")
    value = sizes[symbol]
    if divisor:
        value //= int(divisor)
    return value


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def resolve(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """Concrete shape for ``sizes`` such as ``{"B": 1, "H": 256, "W": 256}``."""
        return tuple(_resolve_dim(d, sizes) for d in self.shape)

    @property
    def dynamic_axes(self) -> dict[int, str]:
        """Axis index to symbol name, for ``torch.onnx.export``'s ``dynamic_axes``."""
        return {i: d.replace("/", "_") for i, d in enumerate(self.shape) if isinstance(d, str)}


@dataclass(frozen=True)
class ComponentSpec:
    """A network component's graph interface: named inputs and outputs.

    ``multiple`` is the factor that image height and width must be divisible by.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    multiple: int = 1
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ComponentSpec":
        def tensors(items):
            return tuple(TensorSpec(t["name"], tuple(t["shape"]), t.get("dtype", "float32")) for t in items)

        return cls(
            name=data["name"],
            inputs=tensors(data["inputs"]),
            outputs=tensors(data["outputs"]),
            multiple=data.get("multiple", 1),
            meta=dict(data.get("meta", {})),
        )


GROUP_STATS_INPUT, STATS_WEIGHT_INPUT, TILE_STATS_OUTPUT = "group_stats", "stats_weight", "tile_stats"
"""The tensors of a graph with whole-image GroupNorm statistics (``export/group_stats.py``)."""


ATTENTION_CONTEXT_INPUT, ATTENTION_BIAS_INPUT, TILE_CONTEXT_OUTPUT = "attention_context", "attention_bias", "tile_context"
"""Per spatial attention block ``i``, the tensors ``{name}_{i}`` of its whole-image context (``export/attention_context.py``)."""


CONTEXT_SYMBOL, CONTEXT_TOKENS = "M", 1024
"""The symbol of the context-token count of an attention block, and its largest value: a 32×32
grid of positions, pooled beyond that (``runtime/attention_context.py``). Static graphs take
exactly that many."""

NO_TOKEN = -1e4
"""The logit offset of a context token an attention block must ignore: ``exp`` of it is 0."""


def attention_context_names(index: int) -> tuple[str, str, str]:
    """The context input, bias input and reported feature map of attention block ``index``."""
    return tuple(f"{name}_{index}" for name in (ATTENTION_CONTEXT_INPUT, ATTENTION_BIAS_INPUT, TILE_CONTEXT_OUTPUT))


def attention_context_count(spec: ComponentSpec) -> int:
    """How many attention blocks of the graph take a whole-image context."""
    return sum(t.name.startswith(ATTENTION_CONTEXT_INPUT + "_") for t in spec.inputs)


def has_group_stats(spec: ComponentSpec) -> bool:
    """Whether the graph takes whole-image GroupNorm statistics (and reports its tile's)."""
    return any(t.name == GROUP_STATS_INPUT for t in spec.inputs)


def without_group_stats(spec: ComponentSpec) -> ComponentSpec:
    """``spec`` as its callers see it: without the GroupNorm statistics tensors."""
    extra = {GROUP_STATS_INPUT, STATS_WEIGHT_INPUT, TILE_STATS_OUTPUT}
    extra.update(name for i in range(attention_context_count(spec)) for name in attention_context_names(i))
    return ComponentSpec(
        spec.name,
        tuple(t for t in spec.inputs if t.name not in extra),
        tuple(t for t in spec.outputs if t.name not in extra),
        spec.multiple,
        spec.meta,
    )
