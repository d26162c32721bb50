"""Cell config and recipe: typed, frozen, validated completely at load.

The cell config is the hardware of one cell (set once by the integrator); a recipe is one
product's settings. Unknown keys are errors; every field is documented where it is declared.
Errors come back as a list of `Problem`s with file, line, field path, expected and found.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, Discriminator, Field, Tag, ValidationError, model_validator

from controller.config_base import Invalid, Loc, StrictModel
from controller.plant.config import MqttConfig
from controller.plant.opcua_config import OpcUaConfig
from controller.yamlio import YamlError, key_lines, key_path_at, load_yaml

_M = TypeVar("_M", bound=BaseModel)

Mm = Annotated[
    float, Field(ge=0, le=100_000, description="millimetres along the conveyor from the part sensor")
]


class _CameraCommon(StrictModel):
    """What every camera has, whatever its driver."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="angle name used by recipes")
    serial: str = Field("", description="camera serial number (pylon: how the camera is found)")
    station_mm: Mm = Field(description="trigger station, mm after the part sensor")
    width: int = Field(64, ge=8, le=16_384, description="image width (px), the sensor area read out")
    height: int = Field(64, ge=8, le=16_384, description="image height (px)")


class PylonCameraConfig(_CameraCommon):
    """A Basler camera by serial, through pylon."""

    driver: Literal["pylon"] = Field(description="pylon: a Basler camera by serial")
    offset_x: int = Field(0, ge=0, le=16_384, description="sensor area offset (px)")
    offset_y: int = Field(0, ge=0, le=16_384, description="sensor area offset (px)")
    pixel_format: Literal["RGB8Packed", "RGB8"] = Field(
        "RGB8Packed", description="pixel format; the model takes RGB"
    )
    trigger_source: str = Field(
        "Line1", pattern=r"^(Line[1-8]|Software|Action[1-4])$", description="FrameStart trigger input"
    )
    trigger_activation: Literal["RisingEdge", "FallingEdge"] = Field("RisingEdge", description="trigger edge")
    trigger_latency_ms: float = Field(
        0.0, ge=0, le=1000, description="trigger to frame received, for cameras without timestamp chunks"
    )
    buffers: int = Field(8, ge=2, le=256, description="grab buffers (bounded)")

    @model_validator(mode="after")
    def _check_serial(self) -> PylonCameraConfig:
        if not self.serial:
            raise Invalid([(("serial",), f"a serial number for pylon camera {self.name}", "none")])
        return self


class SocketCameraConfig(_CameraCommon):
    """Frames streamed on a UNIX socket: a simulated line (`cellctl sim`), or a gateway of your own."""

    driver: Literal["socket", "sim"] = Field(
        "socket",
        description="socket: frames streamed on a UNIX socket at `address`; sim: the same (older name)",
    )
    address: str = Field("", description="UNIX socket the frames are served on (empty: inside cellctl demo)")


def _variant(field: str, default: str, aliases: dict[str, str] | None = None) -> Callable[[Any], str]:
    """The tag of a discriminated config: its `field` (absent: `default`), aliases mapped."""

    def tag(value: Any) -> str:
        raw = value.get(field, default) if isinstance(value, dict) else getattr(value, field, default)
        text = raw if isinstance(raw, str) else repr(raw)
        return (aliases or {}).get(text, text)

    return tag


def _unknown(field: str, *tags: str) -> dict[str, Any]:
    """How pydantic reports an unknown tag, for `_problems` to say it in our words."""
    return {
        "custom_error_type": "unknown_variant",
        "custom_error_message": f"unknown {field}",
        "custom_error_context": {"field": field, "tags": ", ".join(repr(t) for t in tags)},
    }


#: A camera's config by its driver (`controller.devices.CAMERA_DRIVERS` opens each); `sim` is
#: socket's older name.
CameraConfig = Annotated[
    Annotated[PylonCameraConfig, Tag("pylon")] | Annotated[SocketCameraConfig, Tag("socket")],
    Discriminator(_variant("driver", "socket", {"sim": "socket"}), **_unknown("driver", "pylon", "socket")),
]


class EncoderConfig(StrictModel):
    """The conveyor encoder."""

    counts_per_mm: float = Field(gt=0, le=10_000, description="encoder counts per mm of belt travel")


class StationsConfig(StrictModel):
    """Positions along the conveyor."""

    decision_mm: Mm = Field(description="the cell stops waiting for views here and decides")
    deadline_mm: Mm = Field(description="the PLC latches the verdict here; later verdicts are refused")
    reject_mm: Mm = Field(description="reject actuator")
    confirm_mm: Mm = Field(description="confirm sensor, checks the kick")


class _PlcCommon(StrictModel):
    """What every PLC link has, whatever its protocol."""

    host: str = Field("127.0.0.1", description="PLC address")
    ring_size: int = Field(16, ge=4, le=16, description="slots per ring; 16 keeps the input DB in one S7 PDU")
    trigger_ring: bool = Field(
        False,
        description="the PLC publishes each camera trigger (camera, count, part, encoder) in a trigger "
        "area, and frames pair with parts exactly by the camera's trigger counter; without it, by "
        "encoder position within the measured uncertainty",
    )
    cycle_ms: float = Field(2.0, ge=0.5, le=100, description="I/O cycle: one read of the input DB")
    timeout_s: float = Field(0.5, gt=0, le=10, description="request timeout")
    heartbeat_timeout_s: float = Field(
        1.0, gt=0, le=60, description="PLC heartbeat unchanged this long: alarm"
    )
    ack_timeout_ms: float = Field(20.0, gt=0, le=1000, description="repeat a verdict not echoed by then")

    def areas(self) -> str:
        """Where the data areas are, in the protocol's words (for people)."""
        raise NotImplementedError


class S7Config(_PlcCommon):
    """A Siemens S7 PLC: the areas are data blocks (DBs)."""

    protocol: Literal["s7"] = Field("s7", description="field bus: S7 (DBs) or Modbus TCP (holding registers)")
    port: int = Field(102, ge=0, le=65535, description="TCP port")
    rack: int = Field(0, ge=0, le=7, description="the CPU's rack")
    slot: int = Field(1, ge=0, le=31, description="the CPU's slot")
    db_plc: int = Field(100, ge=1, le=65535, description="DB written by the PLC, read by the cell")
    db_cell: int = Field(101, ge=1, le=65535, description="DB written by the cell, read by the PLC")
    db_trig: int = Field(102, ge=1, le=65535, description="DB of the trigger area (written by the PLC)")

    def areas(self) -> str:
        return f"DB{self.db_plc} in, DB{self.db_cell} out"


class ModbusConfig(_PlcCommon):
    """A PLC over Modbus TCP: the areas are holding registers, two bytes each."""

    protocol: Literal["modbus"] = Field(description="field bus: S7 (DBs) or Modbus TCP (holding registers)")
    port: int = Field(502, ge=0, le=65535, description="TCP port")
    ring_size: int = Field(
        8, ge=4, le=16, description="slots per ring; at most 8 (one read holds 125 registers)"
    )
    device_id: int = Field(1, ge=0, le=255, description="device (unit) id")
    plc_register: int = Field(0, ge=0, le=65535, description="first holding register of the PLC → cell area")
    cell_register: int = Field(
        1000, ge=0, le=65535, description="first holding register of the cell → PLC area"
    )
    trig_register: int = Field(500, ge=0, le=65535, description="first holding register of the trigger area")

    @model_validator(mode="after")
    def _check_ring(self) -> ModbusConfig:
        if self.ring_size > 8:
            expected = "at most 8 for Modbus (one read holds 125 registers)"
            raise Invalid([(("ring_size",), expected, str(self.ring_size))])
        return self

    def areas(self) -> str:
        return f"registers {self.plc_register} in, {self.cell_register} out, unit {self.device_id}"


#: The PLC link's config by its protocol (`controller.devices.PLC_DRIVERS` opens each,
#: `simulators.launcher.SIM_PLCS` serves each on a simulated line).
PlcConfig = Annotated[
    Annotated[S7Config, Tag("s7")] | Annotated[ModbusConfig, Tag("modbus")],
    Discriminator(_variant("protocol", "s7"), **_unknown("protocol", "s7", "modbus")),
]


class InferenceConfig(StrictModel):
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


class RecordsConfig(StrictModel):
    """Where records and images go."""

    database: str = Field("var/records.sqlite", description="SQLite file (WAL)")
    images: str = Field("var/images", description="folder for images of rejected and sampled parts")


class SimulationConfig(StrictModel):
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


class CellConfig(StrictModel):
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
    cameras: tuple[CameraConfig, ...] = Field(
        min_length=1, max_length=16, description="the cell's cameras; `driver` says which fields apply"
    )
    plc: PlcConfig = Field(S7Config(), description="the PLC link; `protocol` says which fields apply")
    inference: InferenceConfig = InferenceConfig()
    records: RecordsConfig = RecordsConfig()
    simulation: SimulationConfig = SimulationConfig()
    mqtt: MqttConfig = Field(
        MqttConfig(), description="results, state and status to an MQTT broker (README: Plant connection)"
    )
    opcua: OpcUaConfig = Field(
        OpcUaConfig(), description="an OPC UA server for the plant (README: Plant connection: OPC UA)"
    )

    @model_validator(mode="after")
    def _check(self) -> CellConfig:
        bad: list[tuple[Loc, str, str]] = []
        if self.simulation.belt_speed_mm_s > self.max_belt_speed_mm_s:
            bad.append(
                (
                    ("simulation", "belt_speed_mm_s"),
                    f"at most max_belt_speed_mm_s ({self.max_belt_speed_mm_s:g}; raise it for a faster belt)",
                    f"{self.simulation.belt_speed_mm_s:g}",
                )
            )
        seen: set[str] = set()
        for i, c in enumerate(self.cameras):
            if c.name in seen:
                bad.append((("cameras", i, "name"), "a name no other camera of the cell has", repr(c.name)))
            seen.add(c.name)
        sizes = {(c.width, c.height) for c in self.cameras}
        if len(sizes) > 1:
            found = ", ".join(f"{w}x{h}" for w, h in sorted(sizes))
            bad.append((("cameras",), "one image size for all cameras (views are batched)", found))
        s = self.stations
        last_cam = max(c.station_mm for c in self.cameras)
        if not last_cam < s.decision_mm <= s.deadline_mm < s.reject_mm <= s.confirm_mm:
            bad.append(
                (
                    ("stations",),
                    "stations in order: last camera < decision <= deadline < reject <= confirm",
                    ", ".join(f"{v:g}" for v in (last_cam, *(s.decision_mm, s.deadline_mm, s.reject_mm)))
                    + f", {s.confirm_mm:g} mm",
                )
            )
        if bad:
            raise Invalid(bad)
        return self

    def camera(self, name: str) -> CameraConfig:
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(name)


class ModelConfig(StrictModel):
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
        bad: list[tuple[Loc, str, str]] = []
        classes = f"one of class_names ({', '.join(self.class_names)})"
        bad += [(("good_classes",), classes, repr(c)) for c in self.good_classes if c not in self.class_names]
        bad += [(("min_area_px", c), classes, repr(c)) for c in self.min_area_px if c not in self.class_names]
        if self.kind == "anomaly" and not self.norm_max > self.norm_min:
            bad.append(
                (
                    ("norm_max",),
                    f"more than norm_min ({self.norm_min:g}) for an anomaly model",
                    f"{self.norm_max:g}",
                )
            )
        if bad:
            raise Invalid(bad)
        return self


class CameraSettings(StrictModel):
    """One camera's settings for this product."""

    exposure_us: float = Field(500.0, ge=10, le=1_000_000, description="exposure time (µs)")
    gain_db: float = Field(0.0, ge=0, le=48, description="analog gain (dB)")
    trigger_offset_mm: float = Field(
        0.0, ge=-500, le=500, description="added to the camera's station for this product's length (mm)"
    )


class FusionConfig(StrictModel):
    """How the views of one part combine into its verdict."""

    rule: Literal["any_fail", "k_of_n", "weighted"] = Field(
        "any_fail", description="any view fails; at least k views fail; weighted mean of max scores"
    )
    k: int = Field(1, ge=1, le=16, description="k_of_n: views that must fail")
    weights: dict[str, float] | None = Field(None, description="weighted: weight per camera (default 1)")
    threshold: float = Field(0.5, ge=0, le=1, description="weighted: fail at or over this score")


class RejectPolicy(StrictModel):
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


class ImagePolicy(StrictModel):
    """Which images are kept, and for how long."""

    save_rejected: bool = Field(True, description="save every view of every rejected part")
    sample_passed_every: int = Field(
        100, ge=0, le=1_000_000, description="save every n-th passed part; 0 never"
    )
    retention_days: int = Field(30, ge=1, le=3650, description="images older than this are deleted (days)")


class Recipe(StrictModel):
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

    def model_file(self, recipe_dir: Path) -> Path:
        """The model file, `model.path` taken from the folder the recipe file is in."""
        return (recipe_dir / self.model.path).resolve()

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        m, f = self.model, self.fusion
        bad = _recipe_rules(m.kind, m.class_names, self.thresholds, f.rule, f.k, len(self.cameras))
        if bad:
            raise Invalid(bad)
        return self


def _recipe_rules(
    kind: object, class_names: object, thresholds: object, rule: object, k: object, n_cameras: int | None
) -> list[tuple[Loc, str, str]]:
    """The recipe's cross-field rules, on validated values or, when other fields failed, on
    whatever raw values have the right type (a rule whose inputs do not is skipped), so a
    file's problems come in one run."""
    bad: list[tuple[Loc, str, str]] = []
    names = (
        class_names
        if isinstance(class_names, list | tuple) and all(isinstance(c, str) for c in class_names)
        else None
    )
    known = ("anomaly",) if kind == "anomaly" else names
    for cls, v in (thresholds or {}).items() if isinstance(thresholds, dict) else ():
        if known is not None and cls not in known:
            bad.append((("thresholds", cls), f"a class of the model ({', '.join(known)})", repr(cls)))
        elif isinstance(v, int | float) and not isinstance(v, bool) and not 0.0 < v <= 1.0:
            bad.append((("thresholds", cls), "a threshold in (0, 1]", f"{v:g}"))
    if rule == "k_of_n" and isinstance(k, int) and n_cameras is not None and k > n_cameras:
        bad.append((("fusion", "k"), f"at most the recipe's {n_cameras} cameras", str(k)))
    return bad


def _raw_recipe_rules(data: dict[str, Any]) -> list[tuple[Loc, str, str]]:
    """`_recipe_rules` on a recipe's raw mapping (its fields failed validation)."""
    raw_model, raw_fusion = data.get("model"), data.get("fusion")
    model: dict[str, Any] = raw_model if isinstance(raw_model, dict) else {}
    fusion: dict[str, Any] = raw_fusion if isinstance(raw_fusion, dict) else {}
    cameras = data.get("cameras")
    return _recipe_rules(
        model.get("kind", "multilabel_classifier"),
        model.get("class_names"),
        data.get("thresholds"),
        fusion.get("rule"),
        fusion.get("k"),
        len(cameras) if isinstance(cameras, dict) else None,
    )


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: `file:line: field: expected …, found …`. Without `expected`
    it is a plain statement about the file (`file: no such file`)."""

    file: str
    line: int | None
    field: str
    expected: str
    found: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f"{self.field}: " if self.field else ""
        what = f"expected {self.expected}, found {self.found}" if self.expected else self.found
        text = f"{where}: {field}{what}"
        # One line, whatever a file's keys and values hold: control characters are escaped.
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(Exception):
    """A config or recipe that cannot be used; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _show(value: Any) -> str:
    """A value as a problem's `found`: short, never a whole mapping dumped."""
    if isinstance(value, dict):
        keys = ", ".join(str(k) for k in list(value)[:4]) + (", …" if len(value) > 4 else "")
        return f"a mapping ({keys})" if value else "an empty mapping"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}" if len(value) > 4 else repr(list(value))[:80]
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "…"


#: Our words for what the validation library's error types expect (ctx values filled in).
_EXPECTED = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text",
    "string_pattern_mismatch": "text matching {pattern}",
    "string_too_short": "text of at least {min_length} characters",
    "string_too_long": "text of at most {max_length} characters",
    "greater_than_equal": "at least {ge}",
    "greater_than": "more than {gt}",
    "less_than_equal": "at most {le}",
    "less_than": "less than {lt}",
    "too_short": "at least {min_length} item(s)",
    "too_long": "at most {max_length} item(s)",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping of fields",
    "model_attributes_type": "a mapping of fields",
    "missing": "a value (required)",
}


def _problems(path: Path, exc: ValidationError, model: type[BaseModel]) -> list[Problem]:
    lines = key_lines(path)

    def at(loc: Loc) -> int | None:
        for n in range(len(loc), -1, -1):
            if loc[:n] in lines:
                return lines[loc[:n]]
        return None

    out: list[Problem] = []
    for err in exc.errors():
        raw: Loc = tuple(err["loc"])
        loc, _ = _walk(model, raw)  # without the variant tags pydantic puts in (`plc.s7.rack`)
        kind, ctx = err["type"], err.get("ctx") or {}
        found = _show(err.get("input"))
        if kind == "value_error" and isinstance(ctx.get("error"), Invalid):
            for sub, expected, what in ctx["error"].items:
                full = (*loc, *sub)
                out.append(Problem(str(path), at(full), ".".join(map(str, full)), expected, what))
            continue
        if kind == "unknown_variant":  # `protocol: profinet`, `driver: gige`
            given = err.get("input")
            loc = (*loc, ctx["field"])
            expected = f"one of {ctx['tags']}"
            found = _show(given.get(ctx["field"]) if isinstance(given, dict) else given)
        elif kind == "extra_forbidden":
            expected = _known_key(model, raw)
            found = f"unknown key {loc[-1]!r}"
        elif kind == "missing":
            expected, found = _EXPECTED[kind], "nothing"
        elif kind == "literal_error":
            expected = "one of " + str(ctx.get("expected", "")).replace("' or '", "', '")
        elif kind in _EXPECTED:
            expected = _EXPECTED[kind].format(
                **{k: f"{v:g}" if isinstance(v, float) else v for k, v in ctx.items()}
            )
        elif kind == "value_error":
            expected = str(ctx.get("error", err["msg"]))
        else:  # a kind not foreseen: the library's text, without its own phrasing
            expected = err["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
        out.append(Problem(str(path), at(loc), ".".join(map(str, loc)), expected, found))
    return out


def _known_key(model: type[BaseModel], raw: Loc) -> str:
    """What an unknown key's problem expects: a did-you-mean, or the variant the key belongs to
    (`device_id` in an S7 config is a Modbus key)."""
    key = str(raw[-1])
    _, owner = _walk(model, raw[:-2])
    if isinstance(owner, Variants) and raw[-2] in owner.models:
        tag = str(raw[-2])
        others = [t for t, m in owner.models.items() if t != tag and key in m.model_fields]
        if others:
            return f"a key of {owner.field} {tag} ({key} is for {owner.field} {' or '.join(others)})"
    _, here = _walk(model, raw[:-1])
    names = list(here.model_fields) if isinstance(here, type) and issubclass(here, BaseModel) else []
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    return "a known key" + (f" (did you mean {close[0]!r}?)" if close else "")


@dataclass(frozen=True)
class Variants:
    """A discriminated union of models: the tag's field and the model of each tag."""

    field: str
    models: dict[str, type[BaseModel]]


def variants(ann: Any, meta: tuple[Any, ...] = ()) -> Variants | None:
    """The variants of a discriminated union annotation (`PlcConfig`), else None. A model's
    field keeps the union's metadata apart from it: `meta`."""
    if get_origin(ann) is Annotated:
        ann, *more = get_args(ann)
        meta = (*more, *meta)
    base = ann
    disc = next((m for m in meta if isinstance(m, Discriminator)), None)
    if disc is None or not disc.custom_error_context:
        return None
    models = {}
    for member in get_args(base):
        model, *tags = get_args(member)
        models.update({t.tag: model for t in tags if isinstance(t, Tag)})
    return Variants(str(disc.custom_error_context["field"]), models)


def _model_of(ann: Any, meta: tuple[Any, ...] = ()) -> Any:
    """The model, variants or mapping a (possibly optional) annotation holds, else None."""
    tagged = variants(ann, meta)
    if tagged is not None:
        return tagged
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    if get_origin(ann) is dict:
        return ann
    for arg in get_args(ann):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _walk(model: type[BaseModel], loc: Loc) -> tuple[Loc, Any]:
    """`loc` without the variant tags in it, and what is at its end: a model, `Variants`, a
    name → model mapping's annotation, or None (a plain value)."""
    clean: list[str | int] = []
    m: Any = model
    for part in loc:
        if isinstance(part, int):  # an item of a list (the cell's cameras)
            clean.append(part)
            continue
        if isinstance(m, Variants):
            if part in m.models:
                m = m.models[part]
                continue
            m = None
        clean.append(part)
        if get_origin(m) is dict:  # `part` is a name (a camera's, say): the value's model
            m = _model_of(get_args(m)[1])
        elif isinstance(m, type) and issubclass(m, BaseModel) and part in m.model_fields:
            field = m.model_fields[part]
            m = _model_of(field.annotation, tuple(field.metadata))
        else:
            m = None
    return tuple(clean), m


_KIND = {"Recipe": "recipe", "CellConfig": "cell config"}


def _load(path: Path, model: type[_M]) -> _M:
    kind = _KIND.get(model.__name__, model.__name__)
    try:
        data = load_yaml(path)
    except YamlError as exc:
        raise ConfigError([_yaml_problem(path, str(exc).removeprefix(f"{path}: "))]) from None
    if data is None:
        raise ConfigError([Problem(str(path), None, "", f"a {kind} (a mapping of fields)", "an empty file")])
    if not isinstance(data, dict):
        found = f"{type(data).__name__} {_show(data)}"
        raise ConfigError([Problem(str(path), 1, "", f"a {kind} (a mapping of fields)", found)])
    if model.__name__ == "Recipe" and {"stations", "encoder"} & set(data) and "model" not in data:
        raise ConfigError(
            [Problem(str(path), None, "", "", "a cell config, not a recipe (give it as --cell)")]
        )
    if model.__name__ == "CellConfig" and "model" in data and "stations" not in data:
        raise ConfigError([Problem(str(path), None, "", "", "a recipe, not a cell config")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = _problems(path, exc, model)
        if model.__name__ == "Recipe":  # the cross-field rules too, not only after a second run
            lines = key_lines(path)
            seen = {p.field for p in problems}
            for loc, expected, found in _raw_recipe_rules(data):
                field = ".".join(map(str, loc))
                if field not in seen:
                    problems.append(Problem(str(path), lines.get(loc), field, expected, found))
        raise ConfigError(problems) from None


def _yaml_problem(path: Path, text: str) -> Problem:
    """A YamlError's text (`line N: what`, or `what`) as one Problem with the line in its prefix."""
    head, _, rest = text.partition(": ")
    line = int(head[5:]) if head.startswith("line ") and head[5:].isdigit() else None
    if line is None:
        return Problem(str(path), None, "", "", text)
    dup = re.fullmatch(r"duplicate key (.+) \(first at line (\d+)\)", rest)
    if dup:
        field = ".".join(map(str, key_path_at(path, line, dup.group(1)))) or dup.group(1)
        return Problem(
            str(path),
            line,
            field,
            "each key once",
            f"duplicate key {dup.group(1)} (first at line {dup.group(2)})",
        )
    return Problem(str(path), line, "", "valid YAML", rest)


def load_cell_config(path: Path) -> CellConfig:
    return _load(path, CellConfig)


def load_recipe(path: Path) -> Recipe:
    return _load(path, Recipe)


def content_hash(obj: BaseModel) -> str:
    """Hash of the validated content (not the file's bytes: comments and order do not count)."""
    text = json.dumps(obj.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
