"""The ``.plan`` bundle reader: one file that holds a method's engines (or ONNX graphs) and their manifest.

A bundle is a zip archive of stored (uncompressed) entries. ``manifest.json`` records
the format version, the method, the model set and its metadata, the precision, the
backend (``"tensorrt"``: one serialized engine per component; ``"onnxruntime"`` and
``"openvino"``: one ONNX graph per component, weights embedded, for CPU deployment; an
openvino bundle's precision is ``auto``, ``fp32`` or ``bf16``, the arithmetic OpenVINO
compiles the fp32 graphs to, and its compiled models are cached beside the bundle), the TensorRT flavour,
version and GPU compute capabilities the engines were built for, each component's
spec and optimisation profiles, and the sha256 and size of every entry.

Opening a bundle checks the archive and the manifest; reading an entry checks its
sha256; asking for an engine checks that this machine can run it. Each refusal is a
one-line :class:`UserError` that says how to get a bundle that works.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..methods import BUNDLE_BACKENDS
from ..pipelines.base import settings_text
from ..specs import ComponentSpec, TensorSpec
from .device import ScratchBuffer, compute_capability, resolve_device
from .engine import Engine
from .onnxruntime_backend import OnnxRuntimeEngine, choose_providers
from .openvino_backend import (
    INSTALL_HINT,
    OpenVinoEngine,
    choose_precision,
    component_precision,
    openvino_version,
)
from .profile import Profile
from .tensorrt_backend import TensorRTEngine
from .trt_loader import PIP_NAMES, installed_flavours

MANIFEST_NAME = "manifest.json"
FORMAT = "trt-restore-bundle"
FORMAT_VERSION = 2  # 2: manifests carry complete scheduler configs
_REQUIRED_KEYS = ("method", "model_set", "backend", "precision", "components", "entries")
# A damaged zip archive surfaces from zipfile as any of these (bad offsets, flags or compression methods).
ARCHIVE_ERRORS = (zipfile.BadZipFile, EOFError, OSError, RuntimeError, ValueError, zlib.error, lzma.LZMAError)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _capability(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def supports_compute_capability(targets: Sequence[str], capability: str) -> bool:
    """Whether a GPU of ``capability`` (``"8.6"``) is among the engine's build ``targets``."""
    return _capability(capability) in {_capability(target) for target in targets}


@dataclass(frozen=True)
class Machine:
    """What decides whether a bundle runs here: the installed TensorRT flavours and the GPU."""

    tensorrt: Mapping[str, str]
    """Installed flavour name to version."""
    compute_capability: str | None
    """The CUDA device's compute capability, None without a GPU."""

    @classmethod
    def probe(cls, device: str | torch.device | None = None) -> "Machine":
        return cls(installed_flavours(), compute_capability(device))


def _check_records(manifest: dict) -> None:
    """Raise KeyError, TypeError, ValueError or AttributeError where the manifest's records lack a field
    or type that the reader relies on: each entry's sha256 and size, each component's entry, spec and
    profiles, the model set's name and metadata, and for TensorRT the flavour, version and targets."""
    for key in ("method", "backend", "precision"):
        if not isinstance(manifest[key], str):
            raise TypeError(f"{key} is not a string")
    model_set = manifest["model_set"]
    if not isinstance(model_set["name"], str) or not isinstance(model_set.get("meta", {}), dict):
        raise TypeError("model_set has no name or metadata")
    for record in manifest["entries"].values():
        if not isinstance(record["sha256"], str) or not isinstance(record["size"], int):
            raise TypeError("an entry has no sha256 or size")
    for component in manifest["components"].values():
        if component["entry"] not in manifest["entries"]:
            raise KeyError(component["entry"])
        ComponentSpec.from_json(component["spec"])
        for profile in component.get("profiles", []):
            Profile.from_json(profile).describe()
    if manifest["backend"] == "tensorrt":
        info = manifest["tensorrt"]
        if not isinstance(info["flavour"], str) or not isinstance(info["version"], str):
            raise TypeError("tensorrt has no flavour or version")
        if not isinstance(info["compute_capabilities"], list):
            raise TypeError("tensorrt has no list of compute capabilities")
        supports_compute_capability(info["compute_capabilities"], "0.0")  # each target parses


def _format_tensor(tensor: TensorSpec) -> str:
    return f"{tensor.name} {tensor.dtype} ({', '.join(map(str, tensor.shape))})"


def _format_size(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e5 else f"{nbytes / 1e3:.1f} kB"


class Bundle:
    """An opened ``.plan`` bundle; see the module docstring for what it holds."""

    def __init__(self, path: Path, manifest: dict):
        self.path = path
        self.manifest = manifest
        self._scratch: dict[torch.device, ScratchBuffer] = {}

    @classmethod
    def open(cls, path: str | Path) -> "Bundle":
        """Read and check the archive and its manifest (not the entries: see :meth:`read` and :meth:`verify`)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"bundle '{path}' not found; build one with `trt-restore build`")
        rebuild = "rebuild it with `trt-restore build`"
        try:
            with zipfile.ZipFile(path) as archive:
                raw = archive.read(MANIFEST_NAME)
        except PermissionError as error:
            raise UserError(f"cannot read bundle '{path}' ({error.strerror}); check its permissions") from None
        except ARCHIVE_ERRORS:
            raise UserError(f"{path.name} is not a trt-restore bundle (not a zip archive, or truncated); {rebuild}") from None
        except KeyError:
            raise UserError(f"{path.name} has no {MANIFEST_NAME}, so it is not a trt-restore bundle; {rebuild}") from None
        try:
            manifest = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UserError(f"{path.name} has an unreadable {MANIFEST_NAME}; {rebuild}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise UserError(f"{path.name} is not a trt-restore bundle (its manifest has no format '{FORMAT}'); {rebuild}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise UserError(
                f"{path.name} has bundle format version {manifest.get('format_version')!r}, and this trt-restore "
                f"reads version {FORMAT_VERSION}; {rebuild}"
            )
        missing = [key for key in _REQUIRED_KEYS if key not in manifest]
        if missing:
            raise UserError(f"{path.name} has a damaged manifest (no {', '.join(missing)}); {rebuild}")
        try:
            _check_records(manifest)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise UserError(f"{path.name} has a damaged manifest ({error!r}); {rebuild}") from None
        if manifest["backend"] not in BUNDLE_BACKENDS:
            raise UserError(f"{path.name} is for backend '{manifest['backend']}', which this trt-restore cannot run; {rebuild}")
        return cls(path, manifest)

    @property
    def method(self) -> str:
        return self.manifest["method"]

    @property
    def backend(self) -> str:
        return self.manifest["backend"]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def model_set(self) -> str:
        return self.manifest["model_set"]["name"]

    @property
    def meta(self) -> dict:
        """The model set's metadata (VAE factors, scheduler configs, …) for the pipelines."""
        return self.manifest["model_set"].get("meta", {})

    @property
    def settings(self) -> dict:
        """The model set's own settings for the bundle's method (:attr:`ModelSet.settings`)."""
        return self.meta.get("settings", {}).get(self.method, {})

    @property
    def components(self) -> list[str]:
        return list(self.manifest["components"])

    def _component(self, name: str) -> dict:
        try:
            return self.manifest["components"][name]
        except KeyError:
            raise UserError(
                f"{self.path.name} has no component '{name}'; it has: {', '.join(self.components)}"
            ) from None

    def spec(self, name: str) -> ComponentSpec:
        return ComponentSpec.from_json(self._component(name)["spec"])

    def profiles(self, name: str) -> list[Profile]:
        return [Profile.from_json(p) for p in self._component(name).get("profiles", [])]

    def read(self, entry: str) -> bytes:
        """The bytes of ``entry``, checked against the sha256 in the manifest."""
        record = self.manifest["entries"].get(entry)
        if record is None:
            raise UserError(f"{self.path.name} lists no entry '{entry}'; rebuild it with `trt-restore build`")
        damaged = (
            f"{self.path.name}: entry '{entry}' does not match its recorded sha256, so the file is damaged or was "
            "modified; copy it again or rebuild it with `trt-restore build`"
        )
        try:
            with zipfile.ZipFile(self.path) as archive:
                data = archive.read(entry)
        except KeyError:
            raise UserError(f"{self.path.name} is missing its entry '{entry}'; rebuild it with `trt-restore build`") from None
        except ARCHIVE_ERRORS:  # the zip's own checks (CRC-32, headers) failed first
            raise UserError(damaged) from None
        if sha256_hex(data) != record["sha256"]:
            raise UserError(damaged)
        return data

    def verify(self) -> None:
        """Check the sha256 of every entry."""
        for entry in self.manifest["entries"]:
            self.read(entry)

    def compatibility_problem(self, machine: Machine | None = None) -> str | None:
        """Why ``machine`` (this one by default) cannot run the bundle, or None when it can."""
        if self.backend == "openvino":
            return self._openvino_problem()
        if self.backend != "tensorrt":
            return None
        machine = machine or Machine.probe()
        info = self.manifest.get("tensorrt") or {}
        flavour, version = info.get("flavour", "unknown"), info.get("version", "unknown")
        targets = info.get("compute_capabilities", [])
        name = self.path.name
        rebuild = f"rebuild it on this machine with `trt-restore build` (method {self.method}, precision {self.precision})"
        installed = machine.tensorrt.get(flavour)
        if installed is None:
            here = ", ".join(f"{f} {v}" for f, v in machine.tensorrt.items()) or "no TensorRT"
            return (
                f"{name} holds engines built with {flavour} {version}, but this machine has {here}; "
                f"`pip install {PIP_NAMES.get(flavour, flavour)}=={version}` or {rebuild}"
            )
        if installed != version:
            return (
                f"{name} holds engines built with {flavour} {version}, but this machine has {flavour} {installed}, "
                f"and engines run only on the version that built them; {rebuild}"
            )
        if machine.compute_capability is None:
            return (
                f"{name} holds TensorRT engines, which need an NVIDIA GPU, and this machine has none; "
                "build a CPU bundle with `trt-restore build --backend onnxruntime`"
            )
        if not supports_compute_capability(targets, machine.compute_capability):
            return (
                f"{name} holds engines built for GPU compute capability {', '.join(targets) or 'unknown'}, "
                f"but this GPU has {machine.compute_capability}; {rebuild}"
            )
        return None

    def _openvino_problem(self) -> str | None:
        """Why OpenVINO here cannot run the bundle: not installed, or no bf16 on this CPU for a bf16 bundle."""
        if openvino_version() is None:
            return f"{self.path.name} holds graphs for OpenVINO, which is not installed; {INSTALL_HINT}"
        try:
            choose_precision(self.precision)
        except UserError as error:
            return f"{self.path.name} was built for {self.precision}: {error}"
        return None

    @property
    def cache_dir(self) -> Path | None:
        """Where OpenVINO caches compiled models: ``<bundle>.openvino-cache`` beside it; None where it cannot be written."""
        folder = self.path.with_name(f"{self.path.name}.openvino-cache")
        try:
            folder.mkdir(exist_ok=True)
        except OSError:
            return None
        return folder

    def check_runnable(self, machine: Machine | None = None) -> None:
        """Raise the :meth:`compatibility_problem` as a :class:`UserError`, if there is one."""
        problem = self.compatibility_problem(machine)
        if problem:
            raise UserError(problem)

    def engine(
        self,
        name: str,
        device: str | torch.device | None = None,
        *,
        stream: torch.cuda.Stream | None = None,
        threads: int | None = None,
        precision: str | None = None,
    ) -> Engine:
        """The component's engine on ``device``.

        ``device`` None means the GPU for TensorRT bundles, and for onnxruntime bundles the
        GPU where onnxruntime can use it, else the CPU. TensorRT engines of one bundle
        share one scratch buffer per device and run on ``stream`` (None: the caller's
        current stream). ``threads`` sets onnxruntime's intra-op threads, or OpenVINO's;
        ``precision`` overrides an openvino bundle's.
        """
        record = self._component(name)
        spec = self.spec(name)
        if self.backend == "openvino":
            if device is not None and resolve_device(device).type != "cpu":
                raise UserError(f"{self.path.name} holds graphs for OpenVINO on the CPU, not on '{device}'")
            self.check_runnable()
            return OpenVinoEngine(
                self.read(record["entry"]), spec, threads=threads,
                precision=component_precision(precision or self.precision, self.method, name),
                cache_dir=self.cache_dir,
            )
        if self.backend == "onnxruntime":
            providers = choose_providers("auto") if device is None else resolve_device(device).type
            on_device = torch.cuda.device(resolve_device(device)) if providers == "cuda" else nullcontext()
            with on_device:
                return OnnxRuntimeEngine(self.read(record["entry"]), spec, providers=providers, threads=threads)
        target = resolve_device(device)
        self.check_runnable(Machine.probe(target if target.type == "cuda" else None))
        if target.type != "cuda":
            raise UserError(f"{self.path.name} holds TensorRT engines, which run on a CUDA device, not on '{target}'")
        if target not in self._scratch:
            self._scratch[target] = ScratchBuffer(target)
        return TensorRTEngine(
            self.read(record["entry"]),
            spec,
            device=target,
            stream=stream,
            scratch=self._scratch[target],
            flavour=self.manifest["tensorrt"]["flavour"],
        )

    def engines(self, device: str | torch.device | None = None, **options) -> dict[str, Engine]:
        """Every component's engine, by name (``options`` as for :meth:`engine`)."""
        return {name: self.engine(name, device, **options) for name in self.components}

    def describe(self, machine: Machine | None = None) -> str:
        """A few lines for people: what the bundle holds, whether it is intact, whether it runs here."""
        machine = machine or Machine.probe()
        m = self.manifest
        backend = self.backend
        if self.backend == "tensorrt":
            info = m.get("tensorrt") or {}
            capabilities = ", ".join(info.get("compute_capabilities", [])) or "unknown"
            backend += f" ({info.get('flavour')} {info.get('version')}, GPU compute capability {capabilities})"
        lines = [
            f"{self.path.name}: trt-restore bundle, format {m['format_version']}, {_format_size(self.path.stat().st_size)}",
            f"method {self.method}, model set {self.model_set}, precision {self.precision}, backend {backend}",
            *(["model-set settings: " + settings_text(self.settings)] if self.settings else []),
            "components:",
        ]
        for name in self.components:
            spec = self.spec(name)
            entry = self._component(name)["entry"]
            inputs = ", ".join(_format_tensor(t) for t in spec.inputs)
            outputs = ", ".join(_format_tensor(t) for t in spec.outputs)
            ranges = "; ".join(p.describe() for p in self.profiles(name)) or "any size"
            size = _format_size(m["entries"][entry]["size"])
            lines.append(f"  {name}: {inputs} -> {outputs}; {ranges}; {entry} {size}")
            if "scheduler" in spec.meta:
                lines.append(f"    scheduler: {_format_scheduler(spec.meta['scheduler'])}")
            if "prompt" in spec.meta:
                lines.append(f"    text condition: {_format_prompt(spec.meta['prompt'])}")
            if "low_res_noise" in spec.meta:
                noise = spec.meta["low_res_noise"]
                lines.append(f"    low-resolution noise: level {noise['noise_level']} of {noise['max_noise_level']}")
        try:
            self.verify()
            lines.append(f"integrity: all {len(m['entries'])} entries match their sha256")
        except UserError as error:
            lines.append(f"integrity: FAILED: {error}")
        problem = self.compatibility_problem(machine)
        if problem:
            lines.append(f"runs here: no: {problem}")
        elif self.backend == "onnxruntime":
            lines.append(f"runs here: yes, with onnxruntime on the {choose_providers('auto').upper()}")
        elif self.backend == "openvino":
            lines.append(f"runs here: yes, with OpenVINO {openvino_version()} on the CPU in {choose_precision(self.precision)}")
        else:
            lines.append(f"runs here: yes, on the GPU (compute capability {machine.compute_capability})")
        return "\n".join(lines)


def _format_scheduler(config: dict) -> str:
    """Every sampling field of a scheduler config, ``key=value`` (trained betas by their count)."""
    shown = {key: f"<{len(value)} values>" if key == "trained_betas" and value is not None else value
             for key, value in config.items()}
    return ", ".join(f"{key}={value}" for key, value in shown.items())


def _format_prompt(provenance: dict) -> str:
    """Where a stored prompt embedding came from: the prompt, the text encoder and its weights' sha256."""
    return (
        f"prompt {provenance.get('prompt')!r} embedded by {provenance.get('text_encoder')} "
        f"({provenance.get('text_encoder_weights')}, sha256 {provenance.get('text_encoder_sha256', '')[:16]}), "
        f"{provenance.get('tokens')} tokens"
    )


def describe_bundle(path: str | Path) -> str:
    """Human-readable summary of the bundle at ``path`` and whether this machine can run it."""
    return Bundle.open(path).describe()
