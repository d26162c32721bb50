"""Recipe tooling: validation against the cell and the model, listing, diffs and the schema document.

Validation goes beyond the schema: the cameras must exist in the cell, the triggers must fall
between the part sensor and the decision point, the model file must load and match the
recipe's input size and classes, and the time from the last trigger to the decision point at
the cell's top belt speed must cover the model's measured latency.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import numpy as np
from pydantic import BaseModel

from controller.config import (
    CellConfig,
    ConfigError,
    Problem,
    Recipe,
    Variants,
    content_hash,
    load_recipe,
    variants,
)
from controller.yamlio import YamlError, key_lines, load_yaml

#: Time the cell needs beside inference between the last trigger and the decision (ms):
#: frame transfer, matching, two I/O cycles for the verdict write.
OVERHEAD_MS = 5.0


@dataclass(frozen=True)
class Checked:
    path: Path
    recipe: Recipe | None
    problems: list[Problem]
    inference_p99_ms: float | None = None


def _line(lines: dict[tuple[str | int, ...], int], *loc: str | int) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


#: A recipe folder holding more `*.yaml` files than this is searched only this far.
MAX_RECIPE_FILES = 1000


class RecipeLookupError(Exception):
    """A recipe reference that names no recipe, or more than one; the message (one line) says
    which files and, for a typo, what was meant and which recipes there are. `unknown` tells a
    reference that matched nothing from an ambiguous one."""

    def __init__(self, message: str, unknown: bool) -> None:
        super().__init__(message)
        self.unknown = unknown


def _files(paths: list[Path]) -> str:
    names = [p.name for p in paths]
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def did_you_mean(given: str, candidates: list[str]) -> str:
    """` (did you mean 'x'?)` for the candidate closest to `given`, case aside; "" if none is close."""
    lower = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(given.lower(), list(lower), n=1, cutoff=0.6)
    return f" (did you mean {lower[close[0]]!r}?)" if close else ""


def looks_like_path(ref: str) -> bool:
    """A recipe reference that is a file (`a.yaml`, `dir/a`) rather than a name or number."""
    return "/" in ref or ref.endswith((".yaml", ".yml"))


class RecipeIndex:
    """The recipes of one folder by name and number, each file parsed again only when its
    modification time or size changed. Blocking (stat and parse): call it from a worker thread,
    never on the control loop. Thread-safe; a file that cannot be parsed is found by its stem.

    A name or number that two files share is an error wherever a recipe is looked up: the
    recipe a PLC asks for by number must be exactly one file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._entries: dict[Path, tuple[tuple[int, int], str | None, int | None]] = {}

    def _refresh(self) -> list[tuple[Path, str | None, int | None]]:
        try:
            files = sorted(self.folder.glob("*.yaml"))[:MAX_RECIPE_FILES]
        except OSError:
            return []
        out = []
        for p in files:
            try:
                st = p.stat()
                key = (st.st_mtime_ns, st.st_size)
            except OSError:
                key = (0, -1)  # a dangling link and the like: found by its stem, refused when loaded
            cached = self._entries.get(p)
            if cached is None or cached[0] != key:
                try:
                    r = load_recipe(p)
                    cached = (key, r.name, r.number)
                except Exception:  # ConfigError, or anything unforeseen: refused when activated
                    cached = (key, None, None)
                self._entries[p] = cached
            out.append((p, cached[1], cached[2]))
        for gone in set(self._entries) - set(files):
            del self._entries[gone]
        return out

    def entries(self) -> list[tuple[Path, str | None, int | None]]:
        """(file, name, number) of every `*.yaml` file; name and number None when it cannot load."""
        with self._lock:
            return self._refresh()

    @staticmethod
    def _clashes(entries: list[tuple[Path, str | None, int | None]]) -> dict[Path, list[str]]:
        """For each file that shares its name or number with another: why, naming all of them."""
        by: dict[tuple[str, str | int], list[Path]] = {}
        for p, name, number in entries:
            if name is not None:
                by.setdefault(("name", name), []).append(p)
            if number is not None:
                by.setdefault(("number", number), []).append(p)
        out: dict[Path, list[str]] = {}
        for (what, value), paths in by.items():
            if len(paths) > 1:
                shown = repr(value) if what == "name" else str(value)
                for p in paths:
                    out.setdefault(p, []).append(f"recipe {what} {shown} is in both {_files(paths)}")
        return out

    def duplicates(self) -> dict[Path, list[str]]:
        """Every file whose name or number another file of the folder has, with the reasons."""
        return self._clashes(self.entries())

    def catalogue(self, entries: list[tuple[Path, str | None, int | None]] | None = None) -> str:
        """`name (number), …` of the folder's recipes, by number, for a message."""
        rows = sorted((n, r) for _, r, n in (entries or self.entries()) if r is not None and n is not None)
        shown = ", ".join(f"{r} ({n})" for n, r in rows[:20])
        return (shown + (f", … {len(rows) - 20} more" if len(rows) > 20 else "")) or "none"

    def resolve(self, ref: str | None = None, number: int | None = None) -> Path:
        """The one recipe file `ref` names, by `name:`, file stem, file name, path inside the
        folder, or number (digits), or the one with `number`. Raises RecipeLookupError when none
        matches (with a did-you-mean and the recipes there are) or the recipe is ambiguous (its
        name or number is another file's too; both files named)."""
        entries = self.entries()
        matches: list[Path] = []
        if ref is not None and looks_like_path(ref):
            given = Path(ref)
            if given.is_absolute() or given.parent != Path("."):
                try:
                    inside = given.parent.resolve() == self.folder.resolve()
                except OSError:
                    inside = False
                if not inside:  # the service loads recipes from its folder only
                    raise RecipeLookupError(
                        f"{ref} is not in the recipe folder {self.folder}: copy it into {self.folder}, "
                        f"then activate it by name",
                        unknown=True,
                    )
            stem = given.stem if given.suffix in (".yaml", ".yml") else given.name
            matches = [p for p, _, _ in entries if p.stem == stem]
        elif ref is not None:
            num = int(ref) if ref.isdigit() and len(ref) < 8 else None
            matches = [p for p, name, n in entries if ref in (name, p.stem) or (num is not None and n == num)]
        elif number is not None:
            matches = [p for p, _, n in entries if n == number]
        wanted = repr(ref) if ref is not None else f"number {number}"
        if not matches:
            candidates = sorted({p.stem for p, _, _ in entries} | {r for _, r, _ in entries if r})
            mean = did_you_mean(ref, candidates) if ref else ""
            raise RecipeLookupError(
                f"no recipe {wanted} in {self.folder}{mean}; recipes: {self.catalogue(entries)}", unknown=True
            )
        if len(matches) > 1:
            raise RecipeLookupError(
                f"recipe {wanted} is ambiguous: {_files(matches)} both match", unknown=False
            )
        clash = self._clashes(entries).get(matches[0])
        if clash:
            raise RecipeLookupError(
                f"recipe {wanted} is ambiguous: {'; '.join(clash)} (give each its own name and number)",
                unknown=False,
            )
        return matches[0]

    def find(self, name: str | None = None, number: int | None = None) -> Path | None:
        """The recipe file with this name (file stem or `name:`) or number; None if there is
        none or it is ambiguous (`resolve` says why)."""
        try:
            return self.resolve(name, number)
        except RecipeLookupError:
            return None


def find_recipe(folder: Path, name: str | None = None, number: int | None = None) -> Path | None:
    """The recipe file in `folder` with this name (file stem or `name:`) or number."""
    return RecipeIndex(folder).find(name, number)


def identity_problems(path: Path, index: RecipeIndex | None = None) -> list[Problem]:
    """A recipe whose `name` or `number` another file in its folder has: one problem per field,
    naming both files (the PLC asks by number, the API by name: each must be one file). Pass
    the folder's `index` when checking many files of one folder (each is parsed once)."""
    try:
        recipe = load_recipe(path)
    except ConfigError:
        return []  # its own problems say enough
    me = path.resolve()
    lines = key_lines(path)
    entries = (index or RecipeIndex(path.parent)).entries()
    out: list[Problem] = []
    for field, value in (("name", recipe.name), ("number", recipe.number)):
        others = [
            p
            for p, name, number in entries
            if p.resolve() != me and (name if field == "name" else number) == value
        ]
        if others:
            shown = repr(value) if field == "name" else str(value)
            out.append(
                Problem(
                    str(path),
                    lines.get((field,)),
                    field,
                    f"a {field} no other recipe in {path.parent} has",
                    f"{shown}, as in {_files(others)} (two files, one recipe {field})",
                )
            )
    return out


def recipe_file(ref: str, folder: Path | None) -> Path:
    """A recipe given on the command line: a path (`x.yaml`, `dir/x`) as given when it exists or
    names a folder (loading it says what is wrong), else a name, number or file name looked up
    in `folder`. Raises RecipeLookupError with a one-line reason."""
    given = Path(ref)
    if given.is_dir() or (
        looks_like_path(ref) and (given.exists() or given.is_symlink() or given.parent != Path("."))
    ):
        return given  # loading it says what is wrong with it (a folder, no such file, ...)
    if folder is None:
        if looks_like_path(ref):
            return given
        raise RecipeLookupError(
            f"no recipe folder to look {ref!r} up in: give a file, --recipes FOLDER or set CELL_RECIPES",
            unknown=True,
        )
    if not folder.is_dir():
        raise RecipeLookupError(f"no recipe {ref!r}: the recipe folder {folder} does not exist", unknown=True)
    return RecipeIndex(folder).resolve(ref)


def folder_duplicates(folder: Path) -> list[str]:
    """Each name or number that several recipe files of `folder` share, once, naming the files."""
    seen: list[str] = []
    for reasons in RecipeIndex(folder).duplicates().values():
        seen += [r for r in reasons if r not in seen]
    return seen


def check_recipe(path: Path, cell: CellConfig, measure: bool = True) -> Checked:
    """Every problem with one recipe file for `cell`; `recipe` is None if it cannot be used."""
    try:
        recipe = load_recipe(path)
    except ConfigError as exc:
        return Checked(path, None, exc.problems)
    lines = key_lines(path)
    problems: list[Problem] = []

    def bad(loc: tuple[str | int, ...], expected: str, found: str) -> None:
        field = ".".join(str(x) for x in loc)
        problems.append(Problem(str(path), _line(lines, *loc), field, expected, found))

    cell_cams = {c.name: c for c in cell.cameras}
    st = cell.stations
    decision = recipe.reject.decision_mm or st.decision_mm
    triggers: list[float] = []
    for name, cam in recipe.cameras.items():
        if name not in cell_cams:
            bad(("cameras", name), f"a camera of cell {cell.name} ({', '.join(cell_cams)})", repr(name))
            continue
        at = cell_cams[name].station_mm + cam.trigger_offset_mm
        triggers.append(at)
        if not 0.0 < at < decision:
            bad(
                ("cameras", name, "trigger_offset_mm"),
                f"a trigger between the part sensor (0 mm) and the decision point ({decision:g} mm)",
                f"{cam.trigger_offset_mm:g} mm, which fires at {at:g} mm",
            )
    if recipe.roi is not None:
        x, y, w, h = recipe.roi
        iw, ih = cell.cameras[0].width, cell.cameras[0].height
        if x + w > iw or y + h > ih:
            found = f"x {x}..{x + w}, y {y}..{y + h}"
            bad(("roi",), f"a region inside the cell's {iw}x{ih} px images", found)
    if not decision <= st.deadline_mm:
        bad(
            ("reject", "decision_mm"),
            f"at most the cell's deadline ({st.deadline_mm:g} mm)",
            f"{decision:g} mm",
        )

    p99 = _check_model(path, recipe, bad, measure)
    if p99 is not None and triggers:
        last = max(triggers)
        available_ms = (decision - last) / cell.max_belt_speed_mm_s * 1000.0
        needed_ms = p99 + OVERHEAD_MS + 2 * cell.plc.cycle_ms
        if needed_ms > available_ms:
            bad(
                ("reject", "decision_mm") if recipe.reject.decision_mm else ("cameras",),
                f"at least {needed_ms:.1f} ms from the last trigger ({last:g} mm) to the decision point "
                f"({decision:g} mm) at {cell.max_belt_speed_mm_s:g} mm/s (inference p99 {p99:.1f} ms)",
                f"{available_ms:.1f} ms",
            )
    return Checked(path, None if problems else recipe, problems, p99)


@contextlib.contextmanager
def _quiet_info(logger: str) -> Iterator[None]:
    """Drop `logger`'s INFO lines from this thread only while the block runs (warnings stay)."""
    me = threading.get_ident()

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or record.thread != me

    log = logging.getLogger(logger)
    log.addFilter(keep)
    try:
        yield
    finally:
        log.removeFilter(keep)


def _check_model(path: Path, recipe: Recipe, bad: Any, measure: bool) -> float | None:
    from controller.inference.adapters import make_adapter
    from controller.inference.runner import ModelLoadError, OnnxRunner

    m = recipe.model
    model_path = recipe.model_file(path.parent)
    if not model_path.is_file():
        bad(("model", "path"), "an ONNX file (relative to the recipe)", f"{m.path!r}: no such file")
        return None
    try:
        with _quiet_info("controller.inference.runner"):  # the line's own load logs the model once
            runner = OnnxRunner(model_path, ("CPUExecutionProvider",), intra_threads=1)
    except ModelLoadError as exc:
        bad(("model", "path"), "an ONNX model onnxruntime can load", str(exc)[:200])
        return None
    shape = runner.info.input_shape
    want = (3, *m.input_size)
    if len(shape) != 4 or tuple(shape[1:]) != want:
        bad(
            ("model", "input_size"),
            f"the model's input {list(shape)}",
            f"[N, {want[0]}, {want[1]}, {want[2]}]",
        )
        return None
    if runner.info.class_names and runner.info.class_names != m.class_names:
        bad(
            ("model", "class_names"),
            f"the model's classes {list(runner.info.class_names)}",
            str(list(m.class_names)),
        )
    n = len(recipe.cameras)
    batch = np.zeros((n, *want), dtype=np.float32)
    try:
        adapter = make_adapter(recipe, runner.info.output_names)
        outs = runner.run_all(batch)
        adapter(next(iter(recipe.cameras)), [o[0] for o in outs])
    except Exception as exc:  # ValueError from the adapter; onnxruntime's own errors are untyped
        bad(("model", "kind"), f"outputs a {m.kind} model gives", str(exc)[:200])
        return None
    if not measure:
        return None
    times = []
    for _ in range(30):
        t = time.perf_counter()
        runner.run_all(batch)
        times.append((time.perf_counter() - t) * 1000.0)
    return float(np.percentile(times, 99))


@dataclass(frozen=True)
class Listed:
    """One row of `cellctl recipe list`: `name` is the recipe's `name:` (the file stem when it
    has none); `error` the first problem of a file that cannot load, with how many more."""

    path: Path
    name: str
    number: int | None
    hash: str
    modified: str
    error: str | None
    duplicate: str | None = None
    cell_config: bool = False  # a cell config, not a recipe (in `recipes/cells`, say)


def _raw_name(path: Path) -> str | None:
    """The `name:` a file that does not validate still gives, if any."""
    try:
        data = load_yaml(path)
    except YamlError:
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


def list_recipes(folder: Path) -> list[Listed]:
    """Every recipe file in `folder` (not its subfolders), valid or not, by number (files that
    cannot load last, by file name); `duplicate` says which other files share a name or number.
    Cell configs there are rows too, marked `cell_config`."""
    out: list[Listed] = []
    index = RecipeIndex(folder)
    clashes = index.duplicates()
    for p in sorted(folder.glob("*.yaml")):
        try:
            mtime = datetime.fromtimestamp(p.stat().st_mtime, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        except OSError:  # a dangling link: listed, and invalid below
            mtime = "-"
        try:
            r = load_recipe(p)
        except ConfigError as exc:
            first = str(exc.problems[0]).replace(str(p), p.name, 1)
            if "a cell config, not a recipe" in first:
                out.append(Listed(p, p.stem, None, "", mtime, None, cell_config=True))
                continue
            more = len(exc.problems) - 1
            error = first + (f" (and {more} more: cellctl recipe validate shows them)" if more else "")
            out.append(Listed(p, _raw_name(p) or p.stem, None, "", mtime, error))
            continue
        dup = "; ".join(clashes[p]) if p in clashes else None
        out.append(Listed(p, r.name, r.number, content_hash(r)[:12], mtime, None, dup))
    out.sort(key=lambda r: (r.number is None, r.number or 0, r.path.name))
    return out


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for k, v in value.items():
            flat.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return flat
    return {prefix: value}


def diff_recipes(a: Recipe, b: Recipe) -> list[tuple[str, Any, Any]]:
    """(field path, value in a, value in b) for every field that differs; missing is None."""
    fa, fb = _flatten(a.model_dump(mode="json")), _flatten(b.model_dump(mode="json"))
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def _type_name(ann: Any) -> str:
    origin = get_origin(ann)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(ann))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in get_args(ann) if a is not Ellipsis)
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if ann is type(None):
        return "null"
    return getattr(ann, "__name__", str(ann)).replace("Literal", "one of")


def _range(field: Any) -> str:
    parts = []
    for m in field.metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "len ≥")):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{sym} {v}")
        pattern = getattr(m, "pattern", None)
        if pattern:
            parts.append(f"`{pattern}`".replace("|", "\\|"))  # a bare | would split the table cell
    ann = field.annotation
    if get_origin(ann) is not None and str(get_origin(ann)).endswith("Literal"):
        parts.append(", ".join(repr(a) for a in get_args(ann)))
    return ", ".join(parts)


def schema_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str, str]]:
    """(field, type, range, default, meaning) for every field, nested models flattened."""
    rows: list[tuple[str, str, str, str, str]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = field.annotation
        nested = next(
            (a for a in (ann, *get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        if field.is_required():
            default = "required"
        elif isinstance(field.default, BaseModel):
            default = "(see below)"
        else:
            default = json.dumps(field.get_default(call_default_factory=True), ensure_ascii=False)
        rng = _range(field)
        if get_origin(ann) is not None and "Literal" in str(ann):
            rng = ", ".join(repr(a) for a in get_args(ann))
        tagged = next(
            (v for v in (variants(ann, tuple(field.metadata)), *map(variants, get_args(ann))) if v), None
        )
        if tagged is not None:  # a discriminated union (the PLC by protocol, cameras by driver)
            kinds = " or ".join(m.__name__ for m in tagged.models.values())
            rows.append((path, kinds, f"by `{tagged.field}`", default, field.description or ""))
            rows.extend(_variant_rows(tagged, f"{path}."))
        elif nested is not None and get_origin(ann) is dict:
            rows.append((path, f"map of name → {nested.__name__}", rng, default, field.description or ""))
            rows.extend(schema_rows(nested, f"{path}.<name>."))
        elif nested is not None:
            rows.append((path, nested.__name__, rng, default, field.description or nested.__doc__ or ""))
            rows.extend(schema_rows(nested, f"{path}."))
        else:
            rows.append((path, _type_name(ann), rng, default, field.description or ""))
    return rows


def _variant_rows(tagged: Variants, prefix: str) -> list[tuple[str, str, str, str, str]]:
    """The rows of every variant, once each: a row that differs between variants, or that only
    some have, says which (`protocol modbus: …`)."""
    seen: dict[tuple[str, str, str, str, str], list[str]] = {}
    for tag, model in tagged.models.items():
        for row in schema_rows(model, prefix):
            seen.setdefault(row, []).append(tag)
    rows: list[tuple[str, str, str, str, str]] = []
    tag_path = f"{prefix}{tagged.field}"
    for row, tags in seen.items():
        if row[0] == tag_path:  # the tag itself: one row naming every variant
            if not rows or rows[0][0] != tag_path:
                same = [r for r in seen if r[0] == tag_path]
                default = next((r[3] for r in same if r[3] != "required"), "required")
                rng = ", ".join(repr(t) for t in tagged.models)
                meaning = "; ".join(dict.fromkeys(r[4] for r in same if r[4]))
                rows.insert(0, (tag_path, "str", rng, default, meaning))
            continue
        only = "" if len(tags) == len(tagged.models) else f"{tagged.field} {' or '.join(tags)}: "
        rows.append((*row[:4], only + row[4]))
    return rows


def schema_markdown() -> str:
    """The schema document of recipes and cell configs (recipes/SCHEMA.md)."""
    out = [
        "# Recipe and cell config schema",
        "",
        "Generated by `cellctl recipe schema` from `controller/config.py`; a test keeps it in step.",
        "Unknown keys are errors; duplicate keys, YAML anchors/aliases and files over 256 KiB are refused.",
        "Units are in the field names (`_mm`, `_ms`, `_s`, `_us`, `_db`, `_mm_s`).",
        "",
    ]
    for title, model in (
        ("Recipe (one product)", Recipe),
        ("Cell config (the hardware of one cell)", CellConfig),
    ):
        out += [f"## {title}", "", "| field | type | range | default | meaning |", "|---|---|---|---|---|"]
        for path, typ, rng, default, meaning in schema_rows(model):
            out.append(f"| `{path}` | {typ} | {rng} | {default} | {meaning} |".replace("\n", " "))
        out.append("")
    return "\n".join(out)
