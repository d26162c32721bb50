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
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="angle name used by recipes")
    driver: Literal["sim", "pylon"] = Field("sim", description="real (pylon) or simulated camera")
    serial: str = Field("", description="camera serial number (pylon)")
    station_mm: Mm = Field(description="trigger station, mm after the part sensor")


class EncoderConfig(_Strict):
    counts_per_mm: float = Field(gt=0, le=10_000, description="encoder counts per mm of belt travel")


class StationsConfig(_Strict):
    decision_mm: Mm = Field(description="the cell stops waiting for views here and decides")
    deadline_mm: Mm = Field(description="the PLC latches the verdict here; later verdicts are refused")
    reject_mm: Mm = Field(description="reject actuator")
    confirm_mm: Mm = Field(description="confirm sensor, checks the kick")


class PlcConfig(_Strict):
    protocol: Literal["s7"] = Field("s7", description="field bus")
    host: str = Field("127.0.0.1", description="PLC address")
    port: int = Field(102, ge=0, le=65535, description="TCP port (S7: 102)")
    rack: int = Field(0, ge=0, le=7)
    slot: int = Field(1, ge=0, le=31)
    db_plc: int = Field(100, ge=1, le=65535, description="DB written by the PLC, read by the cell")
    db_cell: int = Field(101, ge=1, le=65535, description="DB written by the cell, read by the PLC")
    ring_size: int = Field(16, ge=4, le=16, description="slots per ring; 16 keeps the input DB in one S7 PDU")
    cycle_ms: float = Field(2.0, ge=0.5, le=100, description="I/O cycle: one read of the input DB")
    timeout_s: float = Field(0.5, gt=0, le=10, description="request timeout")
    heartbeat_timeout_s: float = Field(
        1.0, gt=0, le=60, description="PLC heartbeat unchanged this long: alarm"
    )
    ack_timeout_ms: float = Field(20.0, gt=0, le=1000, description="repeat a verdict not echoed by then")


class InferenceConfig(_Strict):
    providers: tuple[str, ...] = Field(
        ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
        description="onnxruntime execution providers, first that works wins",
    )
    max_batch: int = Field(8, ge=1, le=256)
    queue_size: int = Field(64, ge=1, le=4096, description="views waiting for inference; more are overload")
    threads: int = Field(0, ge=0, le=256, description="onnxruntime intra-op threads; 0 picks min(2, cores)")


class RecordsConfig(_Strict):
    database: str = Field("var/records.sqlite", description="SQLite file (WAL)")
    images: str = Field("var/images", description="folder for images of rejected and sampled parts")


class SimulationConfig(_Strict):
    belt_speed_mm_s: float = Field(1000.0, gt=0, le=10_000)
    parts_per_min: float = Field(1200.0, gt=0, le=20_000)
    spacing_jitter: float = Field(0.15, ge=0, lt=0.5, description="± share of the pitch")
    defect_rate: float = Field(0.3, ge=0, le=1)
    seed: int = 1
    drop_verdict_writes: float = Field(0.0, ge=0, le=0.5, description="share of verdict writes the PLC loses")
    drop_frames: float = Field(0.0, ge=0, le=0.5)
    extra_triggers: float = Field(0.0, ge=0, le=0.5, description="stray trigger pulses per part")


class CellConfig(_Strict):
    """The hardware of one cell."""

    schema_version: Literal[1] = 1
    name: str
    encoder: EncoderConfig
    stations: StationsConfig
    match_tolerance_mm: float = Field(10.0, gt=0, le=1000, description="± window to match a frame to a part")
    cameras: tuple[CameraConfig, ...] = Field(min_length=1, max_length=16)
    plc: PlcConfig = PlcConfig()
    inference: InferenceConfig = InferenceConfig()
    records: RecordsConfig = RecordsConfig()
    simulation: SimulationConfig = SimulationConfig()

    @model_validator(mode="after")
    def _check(self) -> CellConfig:
        names = [c.name for c in self.cameras]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate camera names: {', '.join(dup)}")
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
    path: str = Field(description="ONNX file, relative to the recipe's folder")
    kind: Literal["multilabel_classifier"] = "multilabel_classifier"
    input_size: tuple[int, int] = Field(description="model input height, width (px)")
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (64.0, 64.0, 64.0)
    class_names: tuple[str, ...] = Field(min_length=1)


class FusionConfig(_Strict):
    rule: Literal["any_fail", "k_of_n", "weighted"] = "any_fail"
    k: int = Field(1, ge=1)
    weights: dict[str, float] | None = None
    threshold: float = Field(0.5, ge=0, le=1)


class ImagePolicy(_Strict):
    save_rejected: bool = True
    sample_passed_every: int = Field(100, ge=0, description="save every n-th passed part; 0 never")


class Recipe(_Strict):
    """One product's inspection settings."""

    schema_version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    cameras: tuple[str, ...] = Field(min_length=1, description="cameras this product is inspected with")
    roi: tuple[int, int, int, int] | None = Field(None, description="x, y, w, h in the camera image (px)")
    model: ModelConfig
    thresholds: dict[str, float] = Field(default_factory=dict, description="score threshold per defect class")
    default_threshold: float = Field(0.5, gt=0, le=1)
    fusion: FusionConfig = FusionConfig()
    images: ImagePolicy = ImagePolicy()

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError("cameras: duplicate names")
        unknown = sorted(set(self.thresholds) - set(self.model.class_names))
        if unknown:
            raise ValueError(f"thresholds for classes the model does not have: {', '.join(unknown)}")
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
        return f"{where}: {self.field or '(top)'}: expected {self.expected}, found {self.found}"


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
        raise ConfigError([Problem(str(path), None, "", "valid YAML", str(exc))]) from None
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
