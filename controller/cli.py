"""`cellctl`: the command line of the cell controller."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from controller.config import ConfigError


def _demo(args: argparse.Namespace) -> int:
    from controller.demo import DemoOptions, run_demo

    if args.headless and args.parts == 0:
        print("cellctl demo: --headless needs --parts N (it must end by itself)", file=sys.stderr)
        return 2
    opts = DemoOptions(
        parts=args.parts,
        cameras=args.cameras,
        cameras_from=args.cameras_from,
        headless=args.headless,
        json=args.json,
        parts_per_min=args.ppm,
        cell=args.cell,
        recipe=args.recipe,
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
    )
    return run_demo(opts)


def _fault(text: str) -> str:
    """TARGET[INDEX]:KIND[=VALUE]@SECONDS, checked here so a typo is a one-line usage error."""
    from simulators.faults import Fault

    try:
        Fault.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _run(args: argparse.Namespace) -> int:
    import os

    from controller.daemon import RunOptions, run_service
    from controller.systemd import setup_service_logging

    setup_service_logging(logging.DEBUG if args.verbose else logging.INFO)
    data = args.data_dir or Path(os.environ.get("STATE_DIRECTORY", ".").split(":")[0])
    opts = RunOptions(args.cell, args.recipe, args.recipes, data, args.socket, args.drain_timeout)
    return run_service(opts)


def _console(args: argparse.Namespace) -> int:
    from controller.terminal import attach

    return attach(args.socket)


def _status(args: argparse.Namespace) -> int:
    import json

    from controller.api import ApiError, request

    try:
        reply = request(args.socket, {"op": "status"})
    except ApiError as exc:
        print(f"cellctl: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok") or not isinstance(reply.get("status"), dict):
        print(f"cellctl: status refused: {reply.get('error')}", file=sys.stderr)
        return 1
    st = reply["status"]
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        print(
            f"{st['state']}  recipe {st['recipe']} ({st['recipe_hash']})  parts {st['parts']}  "
            f"passed {st['passed']}  failed {st['failed']}  no decision {st['no_decision']}  "
            f"PLC {'up' if st['link_up'] else 'DOWN'}  alarms {len(st['alarms'])}"
        )
    return 0


def _command(args: argparse.Namespace) -> int:
    from controller.api import ApiError, request

    try:
        reply = request(args.socket, {"op": "command", "command": args.name})
    except ApiError as exc:
        print(f"cellctl: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"cellctl: {args.name} refused: {reply.get('error')}", file=sys.stderr)
        return 1
    print(f"{args.name}: accepted, state {reply['state']}")
    return 0


def _recipe_validate(args: argparse.Namespace) -> int:
    from controller.config import load_cell_config
    from controller.recipes import check_recipe

    cell = load_cell_config(args.cell)
    failed = 0
    for path in args.files:
        checked = check_recipe(path, cell)
        if checked.problems:
            failed += 1
            for p in checked.problems:
                print(p)
        else:
            lat = f", inference p99 {checked.inference_p99_ms:.1f} ms" if checked.inference_p99_ms else ""
            print(f"{path}: valid for cell {cell.name}{lat}")
    return 1 if failed else 0


def _recipe_activate(args: argparse.Namespace) -> int:
    from controller.api import ApiError, request

    try:
        reply = request(args.socket, {"op": "recipe_activate", "name": args.name}, timeout=60.0)
    except ApiError as exc:
        print(f"cellctl: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(
            f"cellctl: recipe {args.name} refused ({reply.get('result')}): {reply.get('error')}",
            file=sys.stderr,
        )
        return 1
    print(f"recipe {args.name}: active, {reply.get('detail')}")
    return 0


def _recipe_list(args: argparse.Namespace) -> int:
    from controller.recipes import list_recipes

    rows = list_recipes(args.folder)
    print(f"{'name':<24} {'number':>6}  {'hash':<12}  {'modified (UTC)':<20}  file")
    for r in rows:
        num = str(r.number) if r.number is not None else "-"
        state = f"  INVALID: {r.error}" if r.error else ""
        print(f"{r.name:<24} {num:>6}  {r.hash or '-':<12}  {r.modified:<20}  {r.path.name}{state}")
    return 0


def _recipe_diff(args: argparse.Namespace) -> int:
    from controller.config import load_recipe
    from controller.recipes import diff_recipes

    a, b = load_recipe(args.a), load_recipe(args.b)
    changes = diff_recipes(a, b)
    for field, va, vb in changes:
        print(f"{field}: {va!r} -> {vb!r}")
    if not changes:
        print("no differences")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    from controller.api import default_socket
    from controller.core.packml import Command
    from controller.demo import DEFAULT_CELL, DEFAULT_RECIPE

    ap = argparse.ArgumentParser(prog="cellctl", description="Inspection cell controller.")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser(
        "demo", help="run the simulated cell (S7 PLC simulator, simulated cameras, real model)"
    )
    d.add_argument("--parts", type=int, default=0, help="stop after N parts (0: run until Ctrl-C)")
    d.add_argument("--cameras", type=int, default=3, help="number of cameras (first K of the cell config)")
    d.add_argument(
        "--cameras-from",
        choices=("sim", "pylon-emulation"),
        default="sim",
        help="simulated cameras, or pylon's emulated Basler cameras fed from rendered files "
        "(then --parts defaults to 300)",
    )
    d.add_argument("--headless", action="store_true", help="no live console")
    d.add_argument("--json", action="store_true", help="print the scored result as one JSON object")
    d.add_argument("--ppm", type=float, default=None, help="line speed in parts per minute")
    d.add_argument("--cell", type=Path, default=DEFAULT_CELL, help="cell config YAML")
    d.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="recipe YAML")
    d.add_argument(
        "--data-dir", type=Path, default=None, help="where records go (default: a temporary folder)"
    )
    d.add_argument(
        "--drop-verdict-writes", type=float, default=None, help="share of verdict writes the PLC loses"
    )
    d.add_argument(
        "--drop-frames", type=float, default=None, help="share of frames lost between camera and host"
    )
    d.add_argument("--extra-triggers", type=float, default=None, help="stray trigger pulses per part")
    d.add_argument("--belt-speed", type=float, default=None, help="belt speed in mm/s (default: cell config)")
    d.add_argument(
        "--no-trigger-ring",
        action="store_true",
        help="pair frames by encoder position only, as with a PLC that publishes no trigger ring",
    )
    d.add_argument(
        "--spacing-jitter", type=float, default=None, help="± share of the pitch between parts (0..0.5)"
    )
    d.add_argument(
        "--plc-scan-ms", type=float, default=None, help="the simulated PLC's scan time (default 1)"
    )
    d.add_argument("--plc-scan-jitter-ms", type=float, default=None, help="± random variation of each scan")
    d.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="TARGET:KIND[=VALUE]@SECONDS",
        help="inject a fault: plc:restart@10, plc:encoder_step=-20000@5, plc:freeze=2@8, plc:drop=1.5@6, "
        "camera1:freeze=2@5, camera0:corrupt@7, disk:full=3@9, client:flood=5@4 (repeatable; the README "
        "lists every kind)",
    )
    d.add_argument("--seed", type=int, default=None, help="simulation seed")
    d.add_argument(
        "--socket",
        type=Path,
        default=None,
        help="control socket (default: CELLCTL_SOCKET or a per-user folder)",
    )
    d.set_defaults(func=_demo)

    rn = sub.add_parser("run", help="run the cell as a headless service until SIGTERM (systemd: Type=notify)")
    rn.add_argument("--cell", type=Path, required=True, help="cell config YAML")
    rn.add_argument("--recipe", required=True, help="recipe name (or file) to start with")
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
        "--drain-timeout", type=float, default=10.0, help="on SIGTERM, seconds to finish parts in flight"
    )
    rn.set_defaults(func=_run)

    co = sub.add_parser("console", help="live operator console of the running cell, with command keys")
    co.add_argument("--socket", type=Path, default=default_socket(), help="the service's control socket")
    co.set_defaults(func=_console)

    s = sub.add_parser("status", help="status of the running cell (local API)")
    s.add_argument("--socket", type=Path, default=default_socket(), help="the service's control socket")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_status)

    k = sub.add_parser("command", help="send a PackML command to the running cell (local API)")
    k.add_argument("name", choices=[c.name.lower() for c in Command if c is not Command.UNDEFINED])
    k.add_argument("--socket", type=Path, default=default_socket(), help="the service's control socket")
    k.set_defaults(func=_command)

    r = sub.add_parser("recipe", help="validate, list, compare recipes")
    rs = r.add_subparsers(dest="recipe_command", required=True)
    rv = rs.add_parser(
        "validate", help="check recipes against the cell and their model; exit 1 if any is invalid"
    )
    rv.add_argument("files", type=Path, nargs="+")
    rv.add_argument("--cell", type=Path, default=DEFAULT_CELL, help="cell config the recipes are for")
    rv.set_defaults(func=_recipe_validate)
    ra = rs.add_parser("activate", help="switch the running cell to a recipe (safe states, or between parts)")
    ra.add_argument("name", help="recipe name (or file stem) in the service's recipe folder")
    ra.add_argument("--socket", type=Path, default=default_socket(), help="the service's control socket")
    ra.set_defaults(func=_recipe_activate)
    rl = rs.add_parser("list", help="recipes with number, content hash and modification time")
    rl.add_argument("folder", type=Path, nargs="?", default=DEFAULT_RECIPE.parent)
    rl.set_defaults(func=_recipe_list)
    rd = rs.add_parser("diff", help="what changed between two recipes, field by field")
    rd.add_argument("a", type=Path)
    rd.add_argument("b", type=Path)
    rd.set_defaults(func=_recipe_diff)
    rsch = rs.add_parser("schema", help="print the recipe and cell config schema (Markdown)")
    rsch.set_defaults(func=_recipe_schema)

    c = sub.add_parser("contract", help="print the PLC data contract (areas, codes, alarms)")
    c.add_argument("--markdown", action="store_true", help="the whole contract as Markdown (the README's)")
    c.add_argument("--ring-size", type=int, default=16)
    c.set_defaults(func=_contract)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s",
    )
    try:
        rc: int = args.func(args)
    except ConfigError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into head and the like
        return 0
    except (RuntimeError, OSError, TimeoutError) as exc:  # a clear line, not a traceback
        print(f"cellctl: {exc}", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
