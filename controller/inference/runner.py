"""The onnxruntime runner: the one module that imports onnxruntime.

Providers are taken in the configured order and probed quietly (onnxruntime-gpu logs loud
errors while looking for CUDA on a machine without it); the first that really runs the model
is kept and reported. On the CPU, intra-op threads are capped and spinning is off, so several
sessions do not fight over the cores. With `fp16` on the CUDA provider (TensorRT builds its own
FP16 engines) the model is converted to FP16 at load, inputs and outputs kept float32, and it is
refused unless its outputs stay within the tolerance of FP32's on the validation batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from controller.inference.transforms import TransformError, fp16_model, uint8_prologue

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class ModelLoadError(Exception):
    """The model file is missing, unreadable, or not what the recipe says (or FP16 is refused)."""


#: Largest difference from FP32 an FP16 model may show on the validation batch, unless the
#: recipe sets its own (scores are 0-1: 0.02 cannot move a verdict except within 0.02 of a threshold).
FP16_TOLERANCE = 0.02


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    sha256: str
    provider: str
    input_name: str
    input_shape: tuple[Any, ...]
    output_name: str
    class_names: tuple[str, ...]
    output_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class GpuOptions:
    """GPU provider settings from the cell config."""

    device_id: int = 0
    fp16: bool = False
    trt_cache: Path | None = None
    max_batch: int = 8

    def provider_options(
        self, provider: str, model_input: tuple[str, tuple[Any, ...]] | None = None
    ) -> dict[str, Any]:
        """Options for `provider`; `model_input` (name, shape) lets TensorRT build one engine for
        every batch size up to `max_batch` instead of rebuilding (seconds) at a new size mid-run."""
        if provider == "TensorrtExecutionProvider":
            opts: dict[str, Any] = {"device_id": self.device_id, "trt_fp16_enable": self.fp16}
            if self.trt_cache is not None:
                self.trt_cache.mkdir(parents=True, exist_ok=True)
                opts |= {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(self.trt_cache),
                    "trt_timing_cache_enable": True,
                    "trt_timing_cache_path": str(self.trt_cache),
                }
            if model_input is not None and all(isinstance(d, int) for d in model_input[1][1:]):
                name, dims = model_input[0], "x".join(str(d) for d in model_input[1][1:])
                opts |= {
                    "trt_profile_min_shapes": f"{name}:1x{dims}",
                    "trt_profile_opt_shapes": f"{name}:{self.max_batch}x{dims}",
                    "trt_profile_max_shapes": f"{name}:{self.max_batch}x{dims}",
                }
            return opts
        if provider == "CUDAExecutionProvider":
            return {"device_id": self.device_id}
        return {}


GPU_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})


def nvidia_device_present() -> bool:
    """A cheap check before probing CUDA providers: the NVIDIA driver's control device exists."""
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")


@contextlib.contextmanager
def _captured_output() -> Iterator[list[str]]:
    """Capture fd 1 and 2 while onnxruntime probes a provider (it prints from C++ and Python)."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            yield lines
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class OnnxRunner:
    """One onnxruntime session for one model; `run_all` takes a ready NCHW float32 batch."""

    def __init__(
        self,
        path: Path,
        providers: tuple[str, ...] = DEFAULT_PROVIDERS,
        intra_threads: int | None = None,
        gpu: GpuOptions | None = None,
        io_binding: bool | None = None,
        *,
        fp16: bool | None = None,
        fp16_tolerance: float = FP16_TOLERANCE,
        validation: np.ndarray | None = None,
    ) -> None:
        """`io_binding`: run through an IOBinding (default: on a GPU provider only).
        `fp16`: convert the model to FP16 at load (default: `gpu.fp16` on the CUDA provider);
        `validation`: a ready NCHW float32 batch of validation images to check it against FP32 on
        (default: seeded noise of the input's shape); over `fp16_tolerance` it is refused."""
        import onnxruntime as ort

        gpu = gpu or GpuOptions()
        if not path.is_file():
            raise ModelLoadError(f"model file {path} does not exist")
        available = set(ort.get_available_providers())
        threads = intra_threads or max(1, min(2, os.cpu_count() or 1))
        last_error = "no provider in the configured list is available"
        self.session: Any = None
        self.fp16 = False
        self.fp16_max_diff: float | None = None
        self._remake: tuple[str | bytes, Any, list[tuple[str, dict[str, Any]]]] = ("", None, [])
        for prov in providers:
            if prov not in available:
                continue
            if prov in GPU_PROVIDERS and not nvidia_device_present():
                log.debug("skipping %s: no NVIDIA device", prov)
                continue
            half = fp16 if fp16 is not None else gpu.fp16 and prov == "CUDAExecutionProvider"
            source = _fp16_source(path) if half else str(path)
            so = ort.SessionOptions()
            so.log_severity_level = 4  # probe quietly; a failed GPU provider is reported once below
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            quiet: contextlib.AbstractContextManager[list[str]] = (
                _captured_output() if prov in GPU_PROVIDERS else contextlib.nullcontext([])
            )
            try:
                model_input = _model_input(path) if prov == "TensorrtExecutionProvider" else None
                with quiet as noise:
                    sess = ort.InferenceSession(
                        source,
                        sess_options=so,
                        providers=[(prov, gpu.provider_options(prov, model_input))],
                    )
            except Exception as exc:  # onnxruntime raises its own untyped errors
                last_error = f"{prov}: {(str(exc).splitlines() or ['?'])[0][:200]}"
                log.warning("model %s: %s unusable, trying the next provider", path.name, prov)
                continue
            if sess.get_providers()[0] == prov:
                self.session, self.fp16 = sess, half
                self._remake = (source, so, [(prov, gpu.provider_options(prov, model_input))])
                if half:
                    reference = ort.InferenceSession(
                        str(path), sess_options=so, providers=[(prov, gpu.provider_options(prov))]
                    )
                    self.fp16_max_diff = _check_fp16(path, reference, sess, validation, fp16_tolerance)
                break
            detail = next((ln for ln in noise if "rror" in ln), "")[:200]
            last_error = f"{prov} fell back to {sess.get_providers()[0]} {detail}".strip()
            log.warning("model %s: %s", path.name, last_error)
        if self.session is None:
            raise ModelLoadError(f"model {path}: {last_error}")
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            names = tuple(json.loads(meta.get("class_names", "[]")))
        except ValueError:
            names = ()
        self.info = ModelInfo(
            path,
            file_sha256(path),
            self.session.get_providers()[0],
            inp.name,
            tuple(inp.shape),
            out.name,
            names,
            tuple(o.name for o in self.session.get_outputs()),
        )
        log.info("model %s on %s (sha256 %s)", path.name, self.info.provider, self.info.sha256[:12])
        on_gpu = self.info.provider in GPU_PROVIDERS
        self.io_binding = on_gpu if io_binding is None else io_binding
        self._device = "cuda" if on_gpu else "cpu"
        self._device_id = gpu.device_id if on_gpu else 0
        self._warmed = self._warmed_u8 = 0
        # On a GPU every batch runs at one shape, padded to the full batch: cuDNN 9 (through
        # onnxruntime's CUDA provider) re-plans every convolution whenever the batch size differs
        # from the previous run's, tens to hundreds of ms, even for sizes it has run before; a
        # stream of parts with 4 cameras, whose batches vary, then falls behind at 100 parts/s.
        # A padded batch of 8 costs a GPU little more than 4; on the CPU it costs double: no padding.
        self.pad_to_batch = on_gpu
        self._u8: tuple[Any, str, tuple[float, ...]] | None = None  # session, input, mean + std

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output of the model, in its order (detectors and anomaly models have several).

        With IOBinding the batch is copied to the device once and each output read back once,
        instead of onnxruntime staging them through its own buffers.
        """
        return self._run(self.session, self.info.input_name, batch)

    def prepare_uint8(self, mean: Sequence[float], std: Sequence[float], *, force: bool = False) -> bool:
        """On a GPU: a second session of the model that takes uint8 NHWC views and normalises them
        itself (`run_uint8`), so the CPU copies each view instead of converting it, and a quarter
        of the bytes cross to the device. False, and nothing built, on the CPU (there numpy's one
        pass is as quick and the cores are onnxruntime's) or where the model cannot take it.
        `force`: build it on the CPU too (tests). Blocking: a session build."""
        key = (*mean, *std)
        if self._u8 is not None and self._u8[2] == key:
            return True
        if not (self.pad_to_batch or force):
            return False
        import onnxruntime as ort

        source, so, providers = self._remake
        try:
            model = uint8_prologue(source if isinstance(source, bytes) else Path(source), mean, std)
        except TransformError as exc:
            log.warning("model %s: views stay float32 on the CPU: %s", self.info.path.name, exc)
            return False
        sess = ort.InferenceSession(model, sess_options=so, providers=providers)
        self._u8 = (sess, sess.get_inputs()[0].name, key)
        self._warmed_u8 = 0
        log.info("model %s: views cross to the device as uint8, normalised there", self.info.path.name)
        return True

    def run_uint8(self, batch: np.ndarray) -> list[np.ndarray]:
        """`run_all` for a uint8 (N, H, W, 3) batch, through the session `prepare_uint8` built."""
        if self._u8 is None:
            raise RuntimeError("prepare_uint8 first")
        return self._run(self._u8[0], self._u8[1], batch)

    def _run(self, session: Any, input_name: str, batch: np.ndarray) -> list[np.ndarray]:
        if not self.io_binding:
            outs: list[np.ndarray] = session.run(None, {input_name: batch})
            return outs
        io = session.io_binding()
        io.bind_cpu_input(input_name, batch)
        for name in self.info.output_names:
            io.bind_output(name, self._device, self._device_id)
        session.run_with_iobinding(io)
        got: list[np.ndarray] = io.copy_outputs_to_cpu()
        return got

    @property
    def warmed(self) -> int:
        """The largest batch size warmed so far (0: none)."""
        return self._warmed

    def warm_up(self, max_batch: int) -> None:
        """Run the batch sizes the worker forms, so the first part does not pay for lazy
        initialisation: on the GPU, cuDNN searches its algorithms for a shape at first use (tens
        to hundreds of ms), and there the worker only runs full, padded batches. On the CPU: 1 and
        a full batch. Done once per size, for the uint8 session too where there is one."""
        sizes = (max_batch, max_batch) if self.pad_to_batch else (1, max_batch)
        shape = [d if isinstance(d, int) else 1 for d in self.info.input_shape[1:]]
        if max_batch > self._warmed:
            for b in sizes:
                self.run_all(np.zeros((b, *shape), dtype=np.float32))
            self._warmed = max_batch
        if self._u8 is not None and max_batch > self._warmed_u8:
            hwc = (*shape[1:], shape[0])
            for b in sizes:
                self.run_uint8(np.zeros((b, *hwc), dtype=np.uint8))
            self._warmed_u8 = max_batch


def _fp16_source(path: Path) -> bytes:
    try:
        return fp16_model(path)
    except TransformError as exc:
        raise ModelLoadError(f"model {path.name}: inference.fp16 on CUDA: {exc}") from exc


def _check_fp16(
    path: Path, reference: Any, half: Any, validation: np.ndarray | None, tolerance: float
) -> float:
    """The largest difference between FP16's and FP32's outputs on the validation batch, which
    must be finite and within `tolerance`. Raises ModelLoadError with the reason."""
    inp = reference.get_inputs()[0]
    if validation is None:
        shape = [d if isinstance(d, int) else 4 if i == 0 else 1 for i, d in enumerate(inp.shape)]
        validation = np.random.default_rng(16).normal(size=shape).astype(np.float32)
        what = f"{shape[0]} seeded noise inputs (no validation images)"
    else:
        what = f"{len(validation)} validation images"
    want = reference.run(None, {inp.name: validation})
    got = half.run(None, {inp.name: validation})
    worst = 0.0
    for name, a, b in zip((o.name for o in reference.get_outputs()), want, got, strict=True):
        diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        if not np.isfinite(diff) or diff > tolerance:
            raise ModelLoadError(
                f"model {path.name}: FP16 refused: output {name!r} differs from FP32 by up to {diff:.4g} on "
                f"{what} (tolerance {tolerance:g}); turn inference.fp16 off or raise model.fp16_tolerance"
            )
        worst = max(worst, diff)
    log.info("model %s: FP16 within %.3g of FP32 on %s", path.name, worst, what)
    return worst


def _model_input(path: Path) -> tuple[str, tuple[Any, ...]]:
    """The model's first input, read with a bare CPU session (onnxruntime has no lighter way)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    inp = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).get_inputs()[0]
    return inp.name, tuple(inp.shape)
