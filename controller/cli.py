"""`cellctl`: the command line of the cell controller."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from controller.config import ConfigError
from controller.logs import setup_logging

#: The installed layout (README, "Running as a service"): what `recipe validate` and `recipe
#: list` use when neither an option nor the environment (CELL_CONFIG, CELL_RECIPES) names one.
INSTALLED_CELL = Path("/etc/inspection-cell/cell.yaml")
INSTALLED_RECIPES = Path("/etc/inspection-cell/recipes")

#: The installed service's control socket (the unit's RuntimeDirectory and CELLCTL_SOCKET).
INSTALLED_SOCKET = Path("/run/inspection-cell/cell.sock")


def client_socket() -> Path:
    """The control socket `status`, `console`, `command` and `recipe activate` talk to when
    --socket does not name one: $CELLCTL_SOCKET; else this user's own service's socket if it is
    there; else the installed service's (systemd) if it is installed; else this user's default."""
    from controller.api import default_socket

    own = default_socket()
    if os.environ.get("CELLCTL_SOCKET") or os.path.exists(own):
        return own
    return INSTALLED_SOCKET if os.path.isdir(INSTALLED_SOCKET.parent) else own


class _Help(argparse.HelpFormatter):
    """Help that shows each option's default, unless its text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        flag = action.nargs == 0  # -v, --json: their default goes without saying
        unset = flag or default is None or default == [] or default == argparse.SUPPRESS
        if not action.option_strings or "(default" in text or unset:
            return text
        return text + " (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """A bad command line is refused in one line (`cellctl demo: --parts: expected …`), exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        message = message.removeprefix("argument ")
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:  # a mistyped subcommand (`dmeo`): what was meant, case aside
            from controller.recipes import did_you_mean

            message += did_you_mean(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)))
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")

    def unrecognized(self, extras: list[str]) -> NoReturn:
        """Refuse arguments this (sub)command does not take, suggesting the option closest to each."""
        from controller.recipes import did_you_mean

        known = [o for o in self._option_string_actions if o.startswith("--")]
        hints = [did_you_mean(x.split("=")[0], known) for x in extras if x.startswith("--")]
        hint = "".join(h.replace("'", "") for h in hints if h)
        self.error(f"unrecognized arguments: {' '.join(extras)}{hint}")


def _value(
    what: str,
    cast: Callable[[str], float],
    lo: float | None = None,
    hi: float | None = None,
    above: bool = False,
) -> Callable[[str], Any]:
    """An option's type: `cast` of the text within lo..hi (over lo when `above`), finite."""

    def parse(text: str) -> Any:
        try:
            v = cast(text)
        except ValueError:
            v = math.nan
        ok = math.isfinite(v) and (lo is None or (v > lo if above else v >= lo)) and (hi is None or v <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}")
        return v

    return parse


def _share(hi: float = 0.5) -> Callable[[str], Any]:
    return _value(f"a share from 0 to {hi:g}", float, 0.0, hi)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("inspection-cell-controller")
    except PackageNotFoundError:
        return "unknown (not installed)"


#: Options of `cellctl demo` that pylon's emulated cameras cannot honour (they fire on software
#: triggers the simulator sends, one per part): refused rather than ignored.
NOT_WITH_PYLON = (("--drop-frames", "drop_frames"), ("--extra-triggers", "extra_triggers"))


def configured_cell(given: Path | None) -> Path | None:
    """The cell config: --cell, else $CELL_CONFIG, else the installed one; None if none is."""
    if given is not None:
        return given
    env = os.environ.get("CELL_CONFIG")
    if env:
        return Path(env)
    return INSTALLED_CELL if INSTALLED_CELL.is_file() else None


def configured_recipes(given: Path | None, cell: Path | None = None) -> Path | None:
    """The recipe folder: the option, else $CELL_RECIPES, else the folder above `cell`'s (as
    `cellctl run` does; not for the installed cell), else the installed one; None if none is."""
    if given is not None:
        return given
    env = os.environ.get("CELL_RECIPES")
    if env:
        return Path(env)
    if cell is not None and cell != INSTALLED_CELL:
        return cell.resolve().parent.parent
    return INSTALLED_RECIPES if INSTALLED_RECIPES.is_dir() else None


#: Exit code of a recipe reference that names no recipe: a usage error, as a bad option is.
NO_SUCH_RECIPE = 2


def _lookup(ref: str, folder: Path | None) -> Path | Exception:
    """`ref` as a recipe file, or the RecipeLookupError saying why not (one line)."""
    from controller.recipes import RecipeLookupError, recipe_file

    try:
        return recipe_file(ref, folder)
    except RecipeLookupError as exc:
        return exc


def _lookup_code(exc: Exception) -> int:
    """Exit code of a failed lookup: 2 for no such recipe, 1 for an ambiguous one (the folder's fault)."""
    return NO_SUCH_RECIPE if getattr(exc, "unknown", True) else 1


def _data_dir_problem(path: Path) -> str | None:
    """Why `path` cannot hold the demo's records, or None (it is a folder or can be made one)."""
    if path.exists():
        return None if path.is_dir() else f"{path} is not a folder"
    for above in path.parents:
        if above.exists():
            return None if above.is_dir() else f"{path} cannot be made: {above} is not a folder"
    return None


def _fault_problem(text: str, cameras: int, data_dir: Path | None) -> str | None:
    """Why a --fault (already parsed) could not happen in this demo, or None."""
    import tempfile

    from simulators.faults import MAX_FILLED_FS, Fault

    f = Fault.parse(text)
    if f.target == "camera" and f.index >= cameras:
        return f"camera{f.index}: the demo runs cameras 0 to {cameras - 1} (--cameras {cameras})"
    if f.target == "disk" and f.kind == "full":
        where = data_dir if data_dir is not None else Path(tempfile.gettempdir())
        probe = next((p for p in (where, *where.parents) if p.exists()), Path("/"))
        st = os.statvfs(probe)
        size = st.f_blocks * st.f_frsize
        if size > MAX_FILLED_FS:
            return (
                f"disk:full fills only a small filesystem, and the data folder {where} is on one of "
                f"{size >> 20} MB: give --data-dir on a small tmpfs (at most {MAX_FILLED_FS >> 20} MB)"
            )
    return None


def _demo(args: argparse.Namespace) -> int:
    from controller.__main__ import quiet_interrupt

    with quiet_interrupt():  # Ctrl-C exits quietly until the demo takes the stop signals itself
        return _start_demo(args)


def _start_demo(args: argparse.Namespace) -> int:
    from controller.config import load_cell_config
    from controller.demo import HEADLESS_NEEDS_PARTS, DemoOptions, run_demo
    from controller.recipes import folder_duplicates

    if not args.cell.is_file():  # before the recipe, which is looked up beside it
        print(f"cellctl demo: --cell: {args.cell}: no such file", file=sys.stderr)
        return 2
    cell = load_cell_config(args.cell)
    _check_cameras(args, cell)
    if args.headless and args.parts == 0:
        print(f"cellctl demo: {HEADLESS_NEEDS_PARTS}", file=sys.stderr)
        return 2
    if args.data_dir is not None and (why := _data_dir_problem(args.data_dir)):
        print(f"cellctl demo: --data-dir: {why}", file=sys.stderr)
        return 2
    for text in args.fault:
        if why := _fault_problem(text, args.cameras, args.data_dir):
            print(f"cellctl demo: --fault {text}: {why}", file=sys.stderr)
            return 2
    recipe = _lookup(args.recipe, args.cell.resolve().parent.parent)
    if isinstance(recipe, Exception):
        print(f"cellctl demo: --recipe: {recipe}", file=sys.stderr)
        return 2
    dups = folder_duplicates(recipe.parent)
    if dups:
        print(f"cellctl demo: recipe folder {recipe.parent}: {'; '.join(dups)}", file=sys.stderr)
        return 2
    if args.mqtt is not None:
        from controller.plant.local_broker import broker_problem

        why = broker_problem()
        if why is not None:
            print(f"cellctl demo: --mqtt: {why}", file=sys.stderr)
            return 2
    opts = DemoOptions(
        parts=args.parts,
        cameras=args.cameras,
        cameras_from=args.cameras_from,
        headless=args.headless,
        json=args.json,
        parts_per_min=args.ppm,
        cell=args.cell,
        recipe=recipe,
        data_dir=args.data_dir,
        drop_verdict_writes=args.drop_verdict_writes,
        drop_frames=args.drop_frames,
        extra_triggers=args.extra_triggers,
        seed=args.seed,
        socket=args.socket,
        belt_speed_mm_s=args.belt_speed,
        trigger_ring=False if args.no_trigger_ring else None,
        spacing_jitter=args.spacing_jitter,
        plc_scan_ms=args.plc_scan_ms,
        plc_scan_jitter_ms=args.plc_scan_jitter_ms,
        faults=tuple(args.fault),
        verbose=args.verbose + args.sub_verbose,
        mqtt=args.mqtt,
        opcua=args.opcua,
    )
    return run_demo(opts)


def _check_cameras(args: argparse.Namespace, cell: Any) -> None:
    """--cameras within the cell's cameras, refused as any option out of range (exit 2)."""
    if not 1 <= args.cameras <= len(cell.cameras):
        args.parser.error(
            f"--cameras: expected a whole number from 1 to {len(cell.cameras)} (the cameras of cell "
            f"{cell.name}), found '{args.cameras}'"
        )


def _fault(text: str) -> str:
    """TARGET[INDEX]:KIND[=VALUE]@SECONDS, checked here so a typo is a one-line usage error."""
    from simulators.faults import Fault

    try:
        Fault.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _sim(args: argparse.Namespace) -> int:
    from controller.config import load_cell_config
    from controller.sim_line import run_sim

    if not args.cell.is_file():
        print(f"cellctl sim: --cell: {args.cell}: no such file", file=sys.stderr)
        return 2
    _check_cameras(args, load_cell_config(args.cell))
    recipe = _lookup(args.recipe, args.cell.resolve().parent.parent)
    if isinstance(recipe, Exception):
        print(f"cellctl sim: --recipe: {recipe}", file=sys.stderr)
        return 2
    return run_sim(args.cell, recipe, args.dir, args.cameras, args.ppm, args.seed)


def _run(args: argparse.Namespace) -> int:
    import os

    from controller.daemon import RunOptions, run_service

    data = args.data_dir or Path(os.environ.get("STATE_DIRECTORY", ".").split(":")[0])
    opts = RunOptions(args.cell, args.recipe, args.recipes, data, args.socket, args.drain_timeout)
    return run_service(opts)


def _console(args: argparse.Namespace) -> int:
    from controller.terminal import attach

    return attach(args.socket)


#: `cellctl status` exit codes, as `systemctl is-active` has them (README, "Using it").
STATUS_OK, STATUS_NO_ANSWER, STATUS_ATTENTION = 0, 1, 3


def _status_once(args: argparse.Namespace) -> int:
    import json

    from controller.api import ApiError, request
    from controller.console import attention, status_lines
    from controller.snapshot import snapshot_from_dict

    try:
        reply = request(args.socket, {"op": "status"})
        if not reply.get("ok") or not isinstance(reply.get("status"), dict):
            raise ApiError(f"status refused: {reply.get('error')}")
    except ApiError as exc:
        if args.json:  # a reader of the JSON learns it too, one object (a line when watching)
            print(json.dumps({"reachable": False, "error": str(exc)}, indent=None if args.watch else 2))
        print(f"cellctl status: {exc}", file=sys.stderr)
        return STATUS_NO_ANSWER
    st = snapshot_from_dict(reply["status"])
    if args.json:  # one object per line when watching, for a reader that takes lines
        print(json.dumps(reply["status"], indent=None if args.watch else 2))
    else:
        print("\n".join(status_lines(st)))
    return STATUS_ATTENTION if attention(st) else STATUS_OK


def _status(args: argparse.Namespace) -> int:
    import time

    if args.watch is None:
        return _status_once(args)
    clear = sys.stdout.isatty() and not args.json
    try:
        while True:
            if clear:
                print("\x1b[H\x1b[2J", end="")
            if not args.json:
                print(f"every {args.watch:g} s, Ctrl-C ends  {time.strftime('%Y-%m-%d %H:%M:%S')}")
            _status_once(args)
            sys.stdout.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def _command(args: argparse.Namespace) -> int:
    from controller.api import ApiError, request

    try:
        reply = request(args.socket, {"op": "command", "command": args.name})
    except ApiError as exc:
        print(f"cellctl command: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"cellctl command: {args.name} refused: {reply.get('error')}", file=sys.stderr)
        return 1
    print(f"{args.name}: accepted, state {reply['state']}")
    return 0


def _recipe_validate(args: argparse.Namespace) -> int:
    from controller.config import Problem, load_cell_config, load_recipe
    from controller.recipes import RecipeIndex, check_recipe, identity_problems

    cell_path = configured_cell(args.cell)
    folder = configured_recipes(args.recipes, cell_path)
    cell = load_cell_config(cell_path) if cell_path is not None else None
    failed = 0
    rc = 0  # 2 once a reference names no recipe (a usage error), else 1 once one is invalid
    indexes: dict[Path, RecipeIndex] = {}  # one per folder: each file parsed once for the identity check
    for ref in args.files:
        path = _lookup(ref, folder)
        if isinstance(path, Exception):
            print(f"cellctl recipe validate: {path}", file=sys.stderr)
            rc = max(rc, _lookup_code(path))
            continue
        problems: list[Problem]
        p99 = None
        if cell is not None:
            checked = check_recipe(path, cell)
            problems, p99 = list(checked.problems), checked.inference_p99_ms
        else:
            try:
                load_recipe(path)
                problems = []
            except ConfigError as exc:
                problems = exc.problems
        index = indexes.setdefault(path.parent, RecipeIndex(path.parent))
        problems += identity_problems(path, index)
        if problems:
            failed += 1
            for p in problems:
                print(p)
        elif cell is not None:
            lat = f", inference p99 {p99:.1f} ms" if p99 else ""
            print(f"{path}: valid for cell {cell.name} ({cell_path}){lat}")
        else:
            print(f"{path}: the schema is valid; not checked against a cell")
    if cell is None:
        print(
            "cellctl recipe validate: no cell config, so it cannot check the fields that depend on the "
            f"cell (cameras, triggers, ROI, decision point, timing): give --cell FILE, set CELL_CONFIG or "
            f"install {INSTALLED_CELL}",
            file=sys.stderr,
        )
        return max(rc, 1 if failed else 2)
    return max(rc, 1 if failed else 0)


def _recipe_activate(args: argparse.Namespace) -> int:
    from controller.api import ApiError, request
    from controller.recipes import looks_like_path

    name = args.name
    if looks_like_path(name) and Path(name).exists():  # a file here: the service checks it is in its folder
        name = str(Path(name).resolve())
    try:
        reply = request(args.socket, {"op": "recipe_activate", "name": name}, timeout=60.0)
    except ApiError as exc:
        print(f"cellctl recipe activate: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        problems = reply.get("problems")
        who = "cellctl recipe activate"
        if reply.get("result") in ("unknown_recipe", "unknown_number"):  # the reason says it all
            print(f"{who}: {reply.get('error')}", file=sys.stderr)
            return NO_SUCH_RECIPE
        if isinstance(problems, list) and len(problems) > 1:
            print(f"{who}: {args.name} refused ({reply.get('result')}):", file=sys.stderr)
            for p in problems:
                print(f"  {p}", file=sys.stderr)
        else:
            print(
                f"{who}: {args.name} refused ({reply.get('result')}): {reply.get('error')}", file=sys.stderr
            )
        return 1
    print(f"recipe {args.name}: active, {reply.get('detail')}")
    return 0


def _recipe_list(args: argparse.Namespace) -> int:
    from controller.recipes import list_recipes

    folder = args.folder or configured_recipes(None, configured_cell(None))
    if folder is None:
        print(
            "cellctl recipe list: no recipe folder configured: give one (cellctl recipe list FOLDER), "
            f"set CELL_RECIPES or install {INSTALLED_RECIPES}",
            file=sys.stderr,
        )
        return 2
    if not folder.is_dir():
        what = "not a folder" if folder.exists() else "no such folder"
        print(f"cellctl recipe list: {folder}: {what}", file=sys.stderr)
        return 1
    listed = list_recipes(folder)
    rows = [r for r in listed if not r.cell_config]
    cells = [r.path for r in listed if r.cell_config]
    if cells:
        names = ", ".join(p.name for p in cells)
        print(
            f"cellctl recipe list: {names} in {folder}: cell configs, not recipes (not listed)",
            file=sys.stderr,
        )
    if not rows:
        print(f"cellctl recipe list: no recipes (*.yaml) in {folder}", file=sys.stderr)
        return 1
    print(f"{'name':<24} {'number':>6}  {'hash':<12}  {'modified (UTC)':<20}  file")
    dups: list[str] = []
    for r in rows:
        num = str(r.number) if r.number is not None else "-"
        state = f"  INVALID: {r.error}" if r.error else "  DUPLICATE" if r.duplicate else ""
        print(f"{r.name:<24} {num:>6}  {r.hash or '-':<12}  {r.modified:<20}  {r.path.name}{state}")
        for why in (r.duplicate or "").split("; "):
            if why and why not in dups:
                dups.append(why)
    for why in dups:
        print(f"cellctl recipe list: {why}", file=sys.stderr)
    return 1 if dups or any(r.error for r in rows) else 0


def _recipe_diff(args: argparse.Namespace) -> int:
    from controller.config import load_recipe
    from controller.recipes import diff_recipes

    folder = configured_recipes(args.recipes, configured_cell(None))
    paths: list[Path] = []
    said: list[str] = []  # one message once, when both references fail alike
    for ref in (args.a, args.b):
        found = _lookup(ref, folder)
        if isinstance(found, Exception):
            said += [str(found)] if str(found) not in said else []
        else:
            paths.append(found)
    for why in said:
        print(f"cellctl recipe diff: {why}", file=sys.stderr)
    if said:
        return 2
    try:
        a, b = load_recipe(paths[0]), load_recipe(paths[1])
    except ConfigError as exc:  # trouble is 2, as diff has it; 1 says only "they differ"
        for p in exc.problems:
            print(p, file=sys.stderr)
        return 2
    changes = diff_recipes(a, b)
    for field, va, vb in changes:
        print(f"{field}: {va!r} -> {vb!r}")
    if not changes:
        print("no differences")
    return 1 if changes else 0


def _recipe_schema(args: argparse.Namespace) -> int:
    from controller.recipes import schema_markdown

    print(schema_markdown())
    return 0


def _contract(args: argparse.Namespace) -> int:
    from controller.contract import ALARMS, contract_markdown, contract_table

    try:
        rows = contract_table(args.ring_size)
    except ValueError as exc:
        print(f"cellctl contract: {exc}", file=sys.stderr)
        return 2
    if args.markdown:
        print(contract_markdown(args.ring_size))
        return 0
    head = ("area", "byte", "field", "type", "meaning")
    cells = [head, *((a, str(o), n, t, m) for a, o, n, t, m in rows)]
    width = [max(len(r[i]) for r in cells) for i in range(4)]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], width, strict=True)) + "  " + r[4])
    print("\nalarms:")
    for code, meaning, cause, does, clears in ALARMS:
        print(f"  {int(code):3d}  {meaning}: {cause}. {does}. Cleared by {clears}.")
    print("\n(--markdown prints the whole contract with every code, as in the README)")
    return 0


VERBOSE = (
    "debug logging; -vv also the libraries' per-packet and per-callback lines (snap7, pymodbus, transitions)"
)


def build_parser() -> _Parser:
    from controller.api import default_socket
    from controller.core.packml import Command
    from controller.demo import DEFAULT_CELL, DEFAULT_RECIPE

    ap = _Parser(prog="cellctl", description="Inspection cell controller.")
    ap.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE)
    ap.add_argument("--version", action="version", version=f"cellctl {_version()}")
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser(
        "demo", help="run the simulated cell (S7 PLC simulator, simulated cameras, real model)"
    )
    d.add_argument(
        "--parts",
        type=_value("a whole number ≥ 0", int, 0),
        default=0,
        help="stop after N parts (0: run until Ctrl-C)",
    )
    d.add_argument(
        "--cameras",
        type=_value("a whole number", int),
        default=3,
        help="number of cameras (first K of the cell config)",
    )
    d.add_argument(
        "--cameras-from",
        choices=("sim", "pylon-emulation"),
        default="sim",
        help="simulated cameras, or pylon's emulated Basler cameras fed from rendered files "
        "(then --parts defaults to 300)",
    )
    d.add_argument("--headless", action="store_true", help="no live console")
    d.add_argument("--json", action="store_true", help="print the scored result as one JSON object")
    d.add_argument(
        "--ppm",
        type=_value("parts per minute over 0, up to 20000", float, 0.0, 20_000, above=True),
        default=None,
        help="line speed in parts per minute (default: the cell config's simulation)",
    )
    d.add_argument("--cell", type=Path, default=DEFAULT_CELL, help="cell config YAML")
    d.add_argument(
        "--recipe",
        default=DEFAULT_RECIPE.stem,
        help="recipe: a file, or a name or number in the folder above the cell config's",
    )
    d.add_argument(
        "--data-dir", type=Path, default=None, help="where records go (default: a temporary folder)"
    )
    d.add_argument(
        "--drop-verdict-writes",
        type=_share(),
        default=None,
        help="share of verdict writes the PLC loses (default: the cell config's simulation)",
    )
    d.add_argument(
        "--drop-frames",
        type=_share(),
        default=None,
        help="share of frames lost between camera and host (default: the cell config's; not with "
        "pylon-emulation)",
    )
    d.add_argument(
        "--extra-triggers",
        type=_share(),
        default=None,
        help="stray trigger pulses per part (default: the cell config's; not with pylon-emulation)",
    )
    d.add_argument(
        "--belt-speed",
        type=_value("a speed in mm/s over 0, up to 10000", float, 0.0, 10_000, above=True),
        default=None,
        help="belt speed in mm/s (default: cell config)",
    )
    d.add_argument(
        "--no-trigger-ring",
        action="store_true",
        help="pair frames by encoder position only, as with a PLC that publishes no trigger ring",
    )
    d.add_argument(
        "--spacing-jitter",
        type=_value("a share from 0 to 0.49", float, 0.0, 0.49),
        default=None,
        help="± share of the pitch between parts (default: the cell config's)",
    )
    d.add_argument(
        "--plc-scan-ms",
        type=_value("a time in ms from 0.5 to 100", float, 0.5, 100),
        default=None,
        help="the simulated PLC's scan time (default: the cell config's, 1)",
    )
    d.add_argument(
        "--plc-scan-jitter-ms",
        type=_value("a time in ms from 0 to 50", float, 0.0, 50),
        default=None,
        help="± random variation of each scan (default: the cell config's, 0)",
    )
    d.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="TARGET:KIND[=VALUE]@SECONDS",
        help="inject a fault: plc:restart@10, plc:encoder_step=-20000@5, plc:freeze=2@8, plc:drop=1.5@6, "
        "camera1:freeze=2@5, camera0:corrupt@7, client:flood=5@4, disk:full=3@9 (with --data-dir on a small "
        "tmpfs) (repeatable; the README lists every kind)",
    )
    d.add_argument(
        "--seed",
        type=_value("a whole number", int),
        default=None,
        help="simulation seed (default: the cell config's)",
    )
    d.add_argument(
        "--socket",
        type=Path,
        default=None,
        help="control socket (default: CELLCTL_SOCKET or a per-user folder)",
    )
    port = _value("a port from 1 to 65535", int, 1, 65535)
    d.add_argument(
        "--mqtt",
        nargs="?",
        const=0,
        type=port,
        default=None,
        metavar="PORT",
        help="publish to a local MQTT broker started for the demo (Mosquitto, else amqtt), on PORT "
        "(default: a free one); watch with mosquitto_sub",
    )
    d.add_argument(
        "--opcua",
        nargs="?",
        const=0,
        type=port,
        default=None,
        metavar="PORT",
        help="serve OPC UA on 127.0.0.1:PORT, anonymous viewers (default: 4840, or a free one if it "
        "is taken); watch with any OPC UA client",
    )
    d.set_defaults(func=_demo, parser=d)

    sm = sub.add_parser(
        "sim",
        help="run a simulated line (PLC and cameras) for `cellctl run` to attach to, until SIGTERM",
        description="Starts the simulated PLC (the cell config's protocol, on a free port of 127.0.0.1) "
        "and cameras (on UNIX sockets), writes the cell config that `cellctl run` attaches with and "
        "prints the command. Parts come once the cell inspects (Reset, Start).",
    )
    sm.add_argument("--cell", type=Path, default=DEFAULT_CELL, help="cell config YAML of the line")
    sm.add_argument(
        "--recipe",
        default=DEFAULT_RECIPE.stem,
        help="recipe the line is triggered for first: a file, or a name or number in the folder above "
        "the cell config's (the PLC's trigger table holds every recipe of that folder)",
    )
    sm.add_argument(
        "--cameras",
        type=_value("a whole number", int),
        default=3,
        help="number of cameras (first K of the cell config)",
    )
    sm.add_argument(
        "--ppm",
        type=_value("parts per minute over 0, up to 20000", float, 0.0, 20_000, above=True),
        default=None,
        help="line speed in parts per minute (default: the cell config's simulation)",
    )
    sm.add_argument(
        "--seed",
        type=_value("a whole number", int),
        default=None,
        help="simulation seed (default: the cell config's)",
    )
    sm.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="folder for the cell config it writes and the camera sockets (default: a temporary folder); "
        "both are removed on exit",
    )
    sm.set_defaults(func=_sim)

    rn = sub.add_parser("run", help="run the cell as a headless service until SIGTERM (systemd: Type=notify)")
    rn.add_argument("--cell", type=Path, required=True, help="cell config YAML")
    rn.add_argument(
        "--recipe", required=True, help="recipe to start with: a name or number in --recipes, or a file"
    )
    rn.add_argument(
        "--recipes",
        type=Path,
        default=None,
        help="recipe folder (default: the folder above the cell config's)",
    )
    rn.add_argument(
        "--data-dir", type=Path, default=None, help="records and images (default: $STATE_DIRECTORY or .)"
    )
    rn.add_argument("--socket", type=Path, default=default_socket(), help="control socket to serve")
    rn.add_argument(
        "--drain-timeout",
        type=_value("seconds from 0 to 3600", float, 0.0, 3600),
        default=10.0,
        help="on SIGTERM, seconds to finish parts in flight",
    )
    rn.set_defaults(func=_run)

    co = sub.add_parser("console", help="live operator console of the running cell, with command keys")
    co.add_argument("--socket", type=Path, default=client_socket(), help="the service's control socket")
    co.set_defaults(func=_console)

    s = sub.add_parser(
        "status",
        help="status of the running cell (local API); exit 3 when it needs someone",
        description="State, totals, rejects by cause and alarms of the running cell. Exit 0 when it "
        "runs or is stopped, idle or held by an operator; 3 when it needs someone (aborted, held by "
        "an alarm, PLC link down); 1 when no service answers.",
    )
    s.add_argument("--socket", type=Path, default=client_socket(), help="the service's control socket")
    s.add_argument("--json", action="store_true", help="the whole status as JSON (the API's)")
    s.add_argument(
        "--watch",
        type=_value("seconds from 0.1 to 3600", float, 0.1, 3600),
        nargs="?",
        const=2.0,
        default=None,
        metavar="SECONDS",
        help="refresh every SECONDS (2 if not given) until Ctrl-C",
    )
    s.set_defaults(func=_status)

    k = sub.add_parser("command", help="send a PackML command to the running cell (local API)")
    k.add_argument("name", choices=[c.name.lower() for c in Command if c is not Command.UNDEFINED])
    k.add_argument("--socket", type=Path, default=client_socket(), help="the service's control socket")
    k.set_defaults(func=_command)

    r = sub.add_parser("recipe", help="validate, list, compare recipes")
    rs = r.add_subparsers(dest="recipe_command", required=True)
    rv = rs.add_parser(
        "validate", help="check recipes against the cell and their model; exit 1 if any is invalid"
    )
    rv.add_argument("files", nargs="+", metavar="RECIPE", help="recipe files, or names or numbers")
    rv.add_argument(
        "--cell",
        type=Path,
        default=None,
        help=f"cell config the recipes are for (default: $CELL_CONFIG, else {INSTALLED_CELL}; "
        "without one, only the schema is checked and the exit code is 2)",
    )
    rv.add_argument(
        "--recipes",
        type=Path,
        default=None,
        help="folder names and numbers are looked up in (default: $CELL_RECIPES, else the folder "
        f"above the cell config's, else {INSTALLED_RECIPES})",
    )
    rv.set_defaults(func=_recipe_validate)
    ra = rs.add_parser("activate", help="switch the running cell to a recipe (safe states, or between parts)")
    ra.add_argument("name", help="recipe name, number or file in the service's recipe folder")
    ra.add_argument("--socket", type=Path, default=client_socket(), help="the service's control socket")
    ra.set_defaults(func=_recipe_activate)
    rl = rs.add_parser("list", help="recipes with number, content hash and modification time")
    rl.add_argument(
        "folder",
        type=Path,
        nargs="?",
        default=None,
        help="recipe folder (default: $CELL_RECIPES, else the folder above $CELL_CONFIG's, "
        f"else {INSTALLED_RECIPES})",
    )
    rl.set_defaults(func=_recipe_list)
    rd = rs.add_parser("diff", help="what changed between two recipes, field by field")
    rd.add_argument("a", metavar="RECIPE_A", help="a recipe file, or a name or number")
    rd.add_argument("b", metavar="RECIPE_B", help="a recipe file, or a name or number")
    rd.add_argument(
        "--recipes", type=Path, default=None, help="folder names and numbers are looked up in (as validate)"
    )
    rd.set_defaults(func=_recipe_diff)
    rsch = rs.add_parser("schema", help="print the recipe and cell config schema (Markdown)")
    rsch.set_defaults(func=_recipe_schema)

    c = sub.add_parser("contract", help="print the PLC data contract (areas, codes, alarms)")
    c.add_argument("--markdown", action="store_true", help="the whole contract as Markdown (the README's)")
    c.add_argument(
        "--ring-size",
        type=_value("a whole number from 4 to 32", int, 4, 32),
        default=16,
        help="slots per ring in the PLC areas",
    )
    c.set_defaults(func=_contract)
    # -v also after the subcommand (`cellctl demo -v`): counted apart, added up in main().
    for p in [*sub.choices.values(), *rs.choices.values()]:
        p.add_argument("-v", "--verbose", action="count", default=0, dest="sub_verbose", help=VERBOSE)
        if p is not r:  # the (sub)command's own parser: its errors carry its name
            p.set_defaults(parser=p)
    return ap


def _parse(ap: _Parser, argv: list[str] | None) -> argparse.Namespace:
    """The command line, each unknown option refused by the (sub)command it was given to, with
    the closest option it has (`cellctl demo: unrecognized arguments: --partz 3 (did you mean
    --parts?)`)."""
    tokens = sys.argv[1:] if argv is None else argv
    known = set(ap._option_string_actions)
    for i, tok in enumerate(tokens):  # options before the subcommand: the top level's
        if not tok.startswith("-") or tok == "--":
            break
        if tok.split("=")[0] not in known and not re.fullmatch(r"-v+", tok):
            ap.unrecognized(tokens[i : i + 1])
    args, extras = ap.parse_known_args(tokens)
    if extras:
        getattr(args, "parser", ap).unrecognized(extras)
    return args


def main(argv: list[str] | None = None) -> int:
    from controller.__main__ import quiet_interrupt

    with quiet_interrupt():  # Ctrl-C while the command's modules load: exit 130, no traceback
        args = _parse(build_parser(), argv)
    if args.func is _demo and args.cameras_from == "pylon-emulation":
        for option, field in NOT_WITH_PYLON:
            if getattr(args, field) is not None:
                args.parser.error(
                    f"{option} does not apply to --cameras-from pylon-emulation (the simulator fires one "
                    "software trigger per part and pylon's emulated cameras lose no frames)"
                )
    setup_logging(args.verbose + args.sub_verbose, service=args.command == "run")
    try:
        rc: int = args.func(args)
    except ConfigError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into head and the like
        return 0
    except KeyboardInterrupt:  # Ctrl-C while waiting for an answer: no traceback
        return 130
    except (RuntimeError, OSError, TimeoutError) as exc:  # a clear line, not a traceback
        print(f"{args.parser.prog}: {exc}", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
