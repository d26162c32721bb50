"""Cell config and recipe: typed, frozen, validated completely at load.

The cell config is the hardware of one cell (set once by the integrator); a recipe is one
product's settings. Unknown keys are errors; every field is documented where it is declared.
Errors come back as a list of `Problem`s with file, line, field path, expected and found.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from controller.yamlio import YamlError, key_lines, load_yaml

_M = TypeVar("_M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Mm = Annotated[
    float, Field(ge=0, le=100_000, description="millimetres along the conveyor from the part sensor")
]


class CameraConfig(_Strict):
    """One camera of the cell."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="angle name used by recipes")
    driver: Literal["socket", "sim", "pylon"] = Field(
        "socket",
        description="pylon: a Basler camera by serial; socket: frames streamed on a UNIX socket at "
        "`address` (a simulated line, or a gateway); sim: the same as socket (older name)",
    )
    serial: str = Field("", description="camera serial number (pylon)")
    address: str = Field(
        "", description="socket driver: UNIX socket the frames are served on (empty: inside cellctl demo)"
    )
    station_mm: Mm = Field(description="trigger station, mm after the part sensor")
    width: int = Field(64, ge=8, le=16_384, description="image width (px), the sensor area read out")
    height: int = Field(64, ge=8, le=16_384, description="image height (px)")
    offset_x: int = Field(0, ge=0, le=16_384, description="sensor area offset (px, pylon)")
    offset_y: int = Field(0, ge=0, le=16_384, description="sensor area offset (px, pylon)")
    pixel_format: Literal["RGB8Packed", "RGB8"] = Field(
        "RGB8Packed", description="pixel format (pylon); the model takes RGB"
    )
    trigger_source: str = Field(
        "Line1", pattern=r"^(Line[1-8]|Software|Action[1-4])$", description="FrameStart trigger input (pylon)"
    )
    trigger_activation: Literal["RisingEdge", "FallingEdge"] = Field("RisingEdge", description="trigger edge")
    trigger_latency_ms: float = Field(
        0.0, ge=0, le=1000, description="trigger to frame received, for cameras without timestamp chunks"
    )
    buffers: int = Field(8, ge=2, le=256, description="pylon grab buffers (bounded)")


class EncoderConfig(_Strict):
    """The conveyor encoder."""

    counts_per_mm: float = Field(gt=0, le=10_000, description="encoder counts per mm of belt travel")


class StationsConfig(_Strict):
    """Positions along the conveyor."""

    decision_mm: Mm = Field(description="the cell stops waiting for views here and decides")
    deadline_mm: Mm = Field(description="the PLC latches the verdict here; later verdicts are refused")
    reject_mm: Mm = Field(description="reject actuator")
    confirm_mm: Mm = Field(description="confirm sensor, checks the kick")


class PlcConfig(_Strict):
    """The PLC link and its data blocks."""

    protocol: Literal["s7", "modbus"] = Field(
        "s7", description="field bus: S7 (DBs) or Modbus TCP (holding registers)"
    )
    host: str = Field("127.0.0.1", description="PLC address")
    port: int = Field(102, ge=0, le=65535, description="TCP port (S7: 102)")
    rack: int = Field(0, ge=0, le=7)
    slot: int = Field(1, ge=0, le=31)
    db_plc: int = Field(100, ge=1, le=65535, description="DB written by the PLC, read by the cell")
    db_cell: int = Field(101, ge=1, le=65535, description="DB written by the cell, read by the PLC")
    device_id: int = Field(1, ge=0, le=255, description="Modbus device (unit) id")
    plc_register: int = Field(
        0, ge=0, le=65535, description="Modbus: first holding register of the PLC → cell area"
    )
    cell_register: int = Field(
        1000, ge=0, le=65535, description="Modbus: first holding register of the cell → PLC area"
    )
    ring_size: int = Field(16, ge=4, le=16, description="slots per ring; 16 keeps the input DB in one S7 PDU")
    trigger_ring: bool = Field(
        False,
        description="the PLC publishes each camera trigger (camera, count, part, encoder) in a trigger "
        "area, and frames pair with parts exactly by the camera's trigger counter; without it, by "
        "encoder position within the measured uncertainty",
    )
    db_trig: int = Field(102, ge=1, le=65535, description="S7: DB of the trigger area (written by the PLC)")
    trig_register: int = Field(
        500, ge=0, le=65535, description="Modbus: first holding register of the trigger area"
    )
    cycle_ms: float = Field(2.0, ge=0.5, le=100, description="I/O cycle: one read of the input DB")
    timeout_s: float = Field(0.5, gt=0, le=10, description="request timeout")
    heartbeat_timeout_s: float = Field(
        1.0, gt=0, le=60, description="PLC heartbeat unchanged this long: alarm"
    )
    ack_timeout_ms: float = Field(20.0, gt=0, le=1000, description="repeat a verdict not echoed by then")


class InferenceConfig(_Strict):
    """Onnxruntime settings."""

    providers: tuple[str, ...] = Field(
        ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
        description="onnxruntime execution providers, first that works wins",
    )
    max_batch: int = Field(8, ge=1, le=256)
    queue_size: int = Field(64, ge=1, le=4096, description="views waiting for inference; more are overload")
    threads: int = Field(0, ge=0, le=256, description="onnxruntime intra-op threads; 0 picks min(2, cores)")
    device_id: int = Field(0, ge=0, le=15, description="GPU used by the CUDA and TensorRT providers")
    fp16: bool = Field(
        False,
        description="FP16: TensorRT builds FP16 engines; on CUDA the model is converted at load and refused "
        "unless within the recipe's model.fp16_tolerance of FP32 on its validation images",
    )
    trt_cache: str = Field(
        "var/trt-cache", description="TensorRT engine and timing cache folder (relative: the data folder)"
    )


class RecordsConfig(_Strict):
    """Where records and images go."""

    database: str = Field("var/records.sqlite", description="SQLite file (WAL)")
    images: str = Field("var/images", description="folder for images of rejected and sampled parts")


class SimulationConfig(_Strict):
    """The simulated line (demo and tests only)."""

    belt_speed_mm_s: float = Field(1000.0, gt=0, le=10_000)
    parts_per_min: float = Field(1200.0, gt=0, le=20_000)
    spacing_jitter: float = Field(0.15, ge=0, lt=0.5, description="± share of the pitch")
    defect_rate: float = Field(0.3, ge=0, le=1)
    seed: int = 1
    drop_verdict_writes: float = Field(0.0, ge=0, le=0.5, description="share of verdict writes the PLC loses")
    drop_frames: float = Field(0.0, ge=0, le=0.5)
    extra_triggers: float = Field(0.0, ge=0, le=0.5, description="stray trigger pulses per part")
    plc_scan_ms: float = Field(1.0, ge=0.5, le=100, description="the simulated PLC's scan time")
    plc_scan_jitter_ms: float = Field(0.0, ge=0, le=50, description="± random variation of each scan")
    encoder_start: int = Field(
        (1 << 32) - 150_000, ge=0, lt=1 << 32, description="raw encoder count when the line starts"
    )


class CellConfig(_Strict):
    """The hardware of one cell."""

    schema_version: Literal[1] = 1
    name: str
    encoder: EncoderConfig
    stations: StationsConfig
    match_tolerance_mm: float = Field(10.0, gt=0, le=1000, description="± window to match a frame to a part")
    max_belt_speed_mm_s: float = Field(
        1000.0, gt=0, le=10_000, description="fastest the conveyor runs (mm/s); recipes must keep up with it"
    )
    min_part_pitch_mm: float = Field(
        20.0, gt=0, le=10_000,
        description="shortest distance between two parts at the sensor (mm); more parts between two "
        "reads of the PLC than the belt travel allows are PLC data the cell does not believe",
    )  # fmt: skip
    cameras: tuple[CameraConfig, ...] = Field(min_length=1, max_length=16)
    plc: PlcConfig = PlcConfig()
    inference: InferenceConfig = InferenceConfig()
    records: RecordsConfig = RecordsConfig()
    simulation: SimulationConfig = SimulationConfig()

    @model_validator(mode="after")
    def _check(self) -> CellConfig:
        if self.simulation.belt_speed_mm_s > self.max_belt_speed_mm_s:
            raise ValueError(
                f"simulation.belt_speed_mm_s {self.simulation.belt_speed_mm_s:g} is faster than "
                f"max_belt_speed_mm_s {self.max_belt_speed_mm_s:g}: raise max_belt_speed_mm_s"
            )
        if self.plc.protocol == "modbus" and self.plc.ring_size > 8:
            raise ValueError("plc.ring_size must be at most 8 for Modbus: one read holds 125 registers")
        names = [c.name for c in self.cameras]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate camera names: {', '.join(dup)}")
        sizes = {(c.width, c.height) for c in self.cameras}
        if len(sizes) > 1:
            raise ValueError(f"all cameras must give one image size: views are batched (got {sorted(sizes)})")
        missing = [c.name for c in self.cameras if c.driver == "pylon" and not c.serial]
        if missing:
            raise ValueError(f"pylon cameras need a serial number: {', '.join(missing)}")
        s = self.stations
        last_cam = max(c.station_mm for c in self.cameras)
        if not last_cam < s.decision_mm <= s.deadline_mm < s.reject_mm <= s.confirm_mm:
            raise ValueError(
                "stations must be ordered: last camera < decision <= deadline < reject <= confirm "
                f"(got {last_cam}, {s.decision_mm}, {s.deadline_mm}, {s.reject_mm}, {s.confirm_mm})"
            )
        return self

    def camera(self, name: str) -> CameraConfig:
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(name)


class ModelConfig(_Strict):
    """The ONNX model and how its input is prepared."""

    path: str = Field(description="ONNX file, relative to the recipe's folder")
    kind: Literal["multilabel_classifier", "classifier", "anomaly", "detector", "segmentation"] = Field(
        "multilabel_classifier",
        description="how outputs become defects: multilabel_classifier (a sigmoid score per class), "
        "classifier (softmax over classes, the top one decides), anomaly (anomalib export: score and map), "
        "detector (YOLO export: boxes, class scores, NMS), segmentation (a score mask per class)",
    )
    input_size: tuple[int, int] = Field(description="model input height, width (px)")
    mean: tuple[float, float, float] = Field(
        (127.5, 127.5, 127.5), description="per-channel mean (0-255 scale)"
    )
    std: tuple[float, float, float] = Field((64.0, 64.0, 64.0), description="per-channel std (0-255 scale)")
    class_names: tuple[str, ...] = Field(min_length=1, description="output classes, in the model's order")
    good_classes: tuple[str, ...] = Field(
        (), description="classifier, segmentation: classes that are not defects (e.g. good, background)"
    )
    logits: bool = Field(False, description="classifier, segmentation: outputs are logits (softmax applied)")
    min_confidence: float = Field(
        0.0, ge=0, le=1, description="classifier: a top class under this is uncertain (rejected)"
    )
    norm_min: float = Field(0.0, description="anomaly: raw score mapped to 0 (from anomalib's metadata)")
    norm_max: float = Field(1.0, description="anomaly: raw score mapped to 1")
    score_output: str = Field("pred_score", description="anomaly: name of the image-score output")
    map_output: str | None = Field("anomaly_map", description="anomaly: name of the anomaly-map output")
    nms_iou: float = Field(0.5, gt=0, le=1, description="detector: overlap over which boxes are merged")
    min_area_px: dict[str, float] = Field(
        default_factory=dict,
        description="detector, segmentation: smallest defect per class (px², model input)",
    )
    fp16_tolerance: float = Field(
        0.02, gt=0, le=1, description="inference.fp16 on CUDA: largest output difference from FP32 allowed"
    )
    validation_images: str | None = Field(
        None,
        description="folder of camera images (PNG, JPEG) an FP16 model is checked on, relative to the "
        "recipe's folder; none: seeded noise",
    )

    @model_validator(mode="after")
    def _check_kind(self) -> ModelConfig:
        unknown = sorted(set(self.good_classes) - set(self.class_names))
        if unknown:
            raise ValueError(f"good_classes not in class_names: {', '.join(unknown)}")
        unknown = sorted(set(self.min_area_px) - set(self.class_names))
        if unknown:
            raise ValueError(f"min_area_px for classes not in class_names: {', '.join(unknown)}")
        if self.kind == "anomaly" and not self.norm_max > self.norm_min:
            raise ValueError("anomaly: norm_max must be greater than norm_min")
        return self


class CameraSettings(_Strict):
    """One camera's settings for this product."""

    exposure_us: float = Field(500.0, ge=10, le=1_000_000, description="exposure time (µs)")
    gain_db: float = Field(0.0, ge=0, le=48, description="analog gain (dB)")
    trigger_offset_mm: float = Field(
        0.0, ge=-500, le=500, description="added to the camera's station for this product's length (mm)"
    )


class FusionConfig(_Strict):
    """How the views of one part combine into its verdict."""

    rule: Literal["any_fail", "k_of_n", "weighted"] = Field(
        "any_fail", description="any view fails; at least k views fail; weighted mean of max scores"
    )
    k: int = Field(1, ge=1, le=16, description="k_of_n: views that must fail")
    weights: dict[str, float] | None = Field(None, description="weighted: weight per camera (default 1)")
    threshold: float = Field(0.5, ge=0, le=1, description="weighted: fail at or over this score")


class RejectPolicy(_Strict):
    """What counts as uncertain, when to decide, what a failed kick does."""

    uncertain_band: float = Field(
        0.0, ge=0, le=0.5, description="a score this close under its threshold makes the view uncertain"
    )
    decision_mm: float | None = Field(
        None,
        ge=0,
        le=100_000,
        description="stop waiting for views here (mm); default: the cell's decision_mm",
    )
    stop_on_confirm_failure: bool = Field(True, description="hold the cell when a kick is not confirmed")


class ImagePolicy(_Strict):
    """Which images are kept, and for how long."""

    save_rejected: bool = Field(True, description="save every view of every rejected part")
    sample_passed_every: int = Field(
        100, ge=0, le=1_000_000, description="save every n-th passed part; 0 never"
    )
    retention_days: int = Field(30, ge=1, le=3650, description="images older than this are deleted (days)")


class Recipe(_Strict):
    """One product's inspection settings."""

    schema_version: Literal[1] = Field(1, description="recipe format version")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="product name, also the file's stem")
    number: int = Field(ge=1, le=65535, description="recipe number the PLC requests this product by")
    cameras: dict[str, CameraSettings] = Field(min_length=1, description="cameras used, by the cell's names")
    roi: tuple[int, int, int, int] | None = Field(None, description="x, y, w, h in the camera image (px)")
    model: ModelConfig
    thresholds: dict[str, float] = Field(default_factory=dict, description="score threshold per defect class")
    default_threshold: float = Field(0.5, gt=0, le=1, description="threshold for classes not listed")
    fusion: FusionConfig = FusionConfig()
    reject: RejectPolicy = RejectPolicy()
    images: ImagePolicy = ImagePolicy()

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        known = {"anomaly"} if self.model.kind == "anomaly" else set(self.model.class_names)
        unknown = sorted(set(self.thresholds) - known)
        if unknown:
            raise ValueError(f"thresholds for classes the model does not have: {', '.join(unknown)}")
        bad = [f"{k}={v}" for k, v in self.thresholds.items() if not 0.0 < v <= 1.0]
        if bad:
            raise ValueError(f"thresholds must be in (0, 1]: {', '.join(bad)}")
        if self.fusion.rule == "k_of_n" and self.fusion.k > len(self.cameras):
            raise ValueError(f"fusion.k = {self.fusion.k} is more than the {len(self.cameras)} cameras")
        return self


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file."""

    file: str
    line: int | None
    field: str
    expected: str
    found: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.field or '(top)'}: expected {self.expected}, found {self.found}"
        # One line, whatever a file's keys and values hold: control characters are escaped.
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(Exception):
    """A config or recipe that cannot be used; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _problems(path: Path, exc: ValidationError, model: type[BaseModel]) -> list[Problem]:
    lines = key_lines(path)
    out: list[Problem] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        line = None
        for n in range(len(loc), -1, -1):
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        expected = err["msg"]
        found = repr(err.get("input"))[:80]
        if err["type"] == "extra_forbidden":
            parent = _field_names(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), parent, n=1)
            expected = "a known key" + (f" (did you mean {close[0]!r}?)" if close else "")
            found = f"unknown key {loc[-1]!r}"
        elif err["type"] == "missing":
            found = "nothing"
            expected = "a value (required)"
        out.append(Problem(str(path), line, ".".join(str(x) for x in loc), expected, found))
    return out


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    m: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = m.model_fields.get(part) if hasattr(m, "model_fields") else None
        if field is None:
            return []
        ann = field.annotation
        for arg in getattr(ann, "__args__", ()) or (ann,):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                m = arg
                break
        else:
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                m = ann
    return list(getattr(m, "model_fields", {}))


def _load(path: Path, model: type[_M]) -> _M:
    try:
        data = load_yaml(path)
    except YamlError as exc:
        found = str(exc).removeprefix(f"{path}: ")
        line, _, rest = found.partition(": ")
        at = int(line[5:]) if line.startswith("line ") and line[5:].isdigit() else None
        raise ConfigError([Problem(str(path), at, "", "valid YAML", rest if at else found)]) from None
    if not isinstance(data, dict):
        raise ConfigError([Problem(str(path), 1, "", "a mapping", type(data).__name__)])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(path, exc, model)) from None


def load_cell_config(path: Path) -> CellConfig:
    return _load(path, CellConfig)


def load_recipe(path: Path) -> Recipe:
    return _load(path, Recipe)


def content_hash(obj: BaseModel) -> str:
    """Hash of the validated content (not the file's bytes: comments and order do not count)."""
    text = json.dumps(obj.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
