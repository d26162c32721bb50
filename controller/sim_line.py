"""`cellctl sim`: a simulated line (the PLC and the cameras) that a `cellctl run` in another
process attaches to, as the end-to-end tests and the soak do.

The line is the one `cellctl demo` runs, without the cell: the PLC of the cell config's protocol
on a free port of 127.0.0.1, the cameras streaming on UNIX sockets. It writes the cell config
to attach with (the same cell, its PLC and cameras pointed at the line) and feeds parts once
the cell inspects (Reset, Start).
"""

from __future__ import annotations

import fcntl
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from controller.config import CellConfig, SocketCameraConfig, load_cell_config, load_recipe
from controller.demo import DemoOptions, line_config, select_cameras

#: Signals that stop the line (and remove what it made), as they stop `cellctl run`.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class ServedLine:
    """A running simulated line and the cell config a service attaches to it with."""

    sim: Any  # simulators.launcher.SimLine
    cell: CellConfig
    cell_file: Path

    def stop(self) -> None:
        self.sim.stop()


def attached_cell(cell: CellConfig, port: int, addresses: list[str]) -> CellConfig:
    """`cell` with its PLC on 127.0.0.1:`port` and its cameras at `addresses` (socket cameras)."""
    cams = tuple(
        SocketCameraConfig(
            name=c.name, serial=c.serial, station_mm=c.station_mm, width=c.width, height=c.height, address=a
        )
        for c, a in zip(cell.cameras, addresses, strict=True)
    )
    plc = cell.plc.model_copy(update={"host": "127.0.0.1", "port": port})
    return cell.model_copy(update={"plc": plc, "cameras": cams})


#: The first line of the cell config `cellctl sim` writes: a file that starts otherwise is not
#: its own, and is never overwritten or removed.
SIM_HEADER = "# Written by cellctl sim:"


class SimFolderError(ValueError):
    """The folder given to `cellctl sim` holds files that are not the simulator's."""


def start_line(
    cell_path: Path,
    recipe_path: Path,
    folder: Path,
    *,
    cameras: int = 3,
    parts_per_min: float | None = None,
    seed: int | None = None,
) -> ServedLine:
    """Start the line for the cell config's first `cameras` cameras, triggered for the recipe
    (the PLC's trigger table holds every recipe of its folder); its camera sockets go in
    `folder`/cams and the cell config to attach with is written to `folder`/cell.yaml."""
    from simulators.launcher import SimLine

    cell, recipe = select_cameras(load_cell_config(cell_path), load_recipe(recipe_path), cameras)
    opts = DemoOptions(cameras=cameras, recipe=recipe_path, parts_per_min=parts_per_min, seed=seed)
    names = [c.name for c in cell.cameras]
    sim = SimLine(line_config(cell, recipe, opts), cell.plc, names, camera_sockets=folder / "cams")
    port = sim.start()
    try:
        attach = attached_cell(cell, port, [sim.camera_address(k) for k in range(len(cell.cameras))])
        cell_file = folder / "cell.yaml"
        head = f"{SIM_HEADER} cell {cell_path} attached to its simulated line.\n"
        data = attach.model_dump(mode="json", exclude_defaults=True)
        data["plc"] = {"protocol": attach.plc.protocol, "host": "127.0.0.1", **data.get("plc", {})}
        body = yaml.safe_dump(data, sort_keys=False)
        cell_file.write_text(head + body)
        load_cell_config(cell_file)  # what it wrote must load as it is
    except BaseException:
        sim.stop()
        raise
    return ServedLine(sim, attach, cell_file)


def attach_text(line: ServedLine, recipe_path: Path) -> str:
    """What `cellctl sim` prints: where the line is, and how to attach the cell to it."""
    p, cell_file = line.cell.plc, line.cell_file
    names = ", ".join(c.name for c in line.cell.cameras)
    return (
        f"simulated line for cell {line.cell.name}: {p.protocol} PLC on 127.0.0.1:{p.port} "
        f"({p.areas()}), cameras {names} on {cell_file.parent / 'cams'}\n"
        f"cell config to attach with: {cell_file}\n"
        f"  cellctl run --cell {cell_file} --recipes {recipe_path.parent} --recipe {recipe_path.stem}\n"
        "  cellctl command reset && cellctl command start    (or: cellctl console)\n"
        "Parts come once the cell inspects. Ctrl-C or SIGTERM stops the line."
    )


def run_sim(
    cell_path: Path,
    recipe_path: Path,
    folder: Path | None,
    cameras: int = 3,
    parts_per_min: float | None = None,
    seed: int | None = None,
) -> int:
    """Run the line until SIGTERM, SIGINT or SIGHUP; exit 0 then, 1 if the line died.

    Its files go in `folder` or a temporary one, and are removed on exit (`line_folder`); a
    folder holding a cell config that is not the simulator's, or one another simulator runs
    in, is refused (exit 2)."""
    stop = threading.Event()
    for sig in STOP_SIGNALS:  # set before the line starts: a signal then still stops it cleanly
        signal.signal(sig, lambda *_: stop.set())
    with ExitStack() as stack:
        try:
            where = stack.enter_context(line_folder(folder))
        except SimFolderError as exc:
            print(f"cellctl sim: {exc}", file=sys.stderr)
            return 2
        line: ServedLine | None = None
        try:
            line = start_line(
                cell_path, recipe_path, where, cameras=cameras, parts_per_min=parts_per_min, seed=seed
            )
            print(attach_text(line, recipe_path), flush=True)
            while not stop.wait(0.25):
                if not line.sim.alive():
                    print("cellctl sim: the simulated line stopped", file=sys.stderr)
                    return 1
            return 0
        finally:
            if line is not None:
                line.stop()


def check_folder(folder: Path | None) -> None:
    """Refuse a folder whose cell.yaml someone else wrote: the line would overwrite it and
    remove it at exit. One a simulator left behind (killed outright) is taken over."""
    if folder is None:
        return
    cell_file = folder / "cell.yaml"
    try:
        with cell_file.open(encoding="utf-8", errors="replace") as f:
            first = f.readline()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SimFolderError(f"cannot read {cell_file}: {exc.strerror or exc}") from None
    if not first.startswith(SIM_HEADER):
        raise SimFolderError(
            f"{cell_file} exists, not written by cellctl sim (the line writes its own there and "
            "removes it at exit): give --dir an empty folder or a new one"
        )


#: The file a running `cellctl sim` holds locked in its `--dir` (released when it ends, however).
LOCK_NAME = ".cellctl-sim.lock"


def _hold(folder: Path) -> IO[bytes]:
    """Lock `folder` for this simulator, or raise `SimFolderError` if another one holds it."""
    f = (folder / LOCK_NAME).open("ab")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise SimFolderError(
            f"{folder} is in use by another cellctl sim (its line's config and sockets are there): "
            "give --dir another folder"
        ) from None
    return f


@contextmanager
def line_folder(folder: Path | None) -> Iterator[Path]:
    """The folder the line writes its cell config and camera sockets in: `folder`, made if
    missing, or a temporary one. On leaving, what the line wrote there is removed, and so is
    every folder made here that is then empty; a folder that was there before stays, and so
    does anything else put in one (`cellctl sim --dir`). Raises `SimFolderError` for a folder
    whose cell.yaml is not the simulator's (`check_folder`), or that another running simulator
    holds (`LOCK_NAME`, locked while it runs)."""
    check_folder(folder)
    if folder is None:
        where = Path(tempfile.mkdtemp(prefix="cell-sim-"))
        try:
            yield where
        finally:
            shutil.rmtree(where, ignore_errors=True)
        return
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # the deepest first
    folder.mkdir(parents=True, exist_ok=True)
    lock = _hold(folder)
    cams = folder / "cams"
    cams_made = not cams.exists()
    try:
        yield folder
    finally:
        (folder / LOCK_NAME).unlink(missing_ok=True)  # before the lock goes: no one waits on it
        lock.close()
        (folder / "cell.yaml").unlink(missing_ok=True)
        if cams_made:
            shutil.rmtree(cams, ignore_errors=True)
        else:  # someone's folder: only the line's sockets go
            for sock in cams.glob("cam*.sock"):
                sock.unlink(missing_ok=True)
        for p in made:
            try:
                p.rmdir()  # only while empty: what others put there meanwhile stays
            except OSError:
                break
