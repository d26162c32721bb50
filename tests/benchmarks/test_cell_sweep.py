"""Benchmark (make bench): the full simulated cell at increasing line speed with 1, 2, 4 and 8
cameras, until it starts rejecting for lack of time; for the demo model and for a
MobileNetV3-Large-class classifier at 224 px. Prints a table, writes .bench/cell_sweep.json and,
with matplotlib (the `bench` extra), .bench/cell_sweep.png. Only asserts that runs completed."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.demo import DemoOptions, _demo
from tests.benchmarks.mobilenet_like import build

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / ".bench"
SECONDS = float(os.environ.get("BENCH_SECONDS", "12"))  # of parts per run
MIN_PITCH_MM = 32.0  # twice the match tolerance and then some: the belt speeds up with the line


def cell_and_recipe(tmp: Path, cameras: int, ppm: float, model: Path, input_size: int) -> tuple[Path, Path]:
    cell = yaml.safe_load((ROOT / "recipes/cells/demo-cell.yaml").read_text())
    belt = max(1000.0, ppm * MIN_PITCH_MM / 60.0)
    cell["cameras"] = [
        {"name": f"cam{i}", "driver": "sim", "serial": f"SIM-{i}", "station_mm": 120 + 25 * i}
        for i in range(cameras)
    ]
    cell["max_belt_speed_mm_s"] = belt
    cell["simulation"]["belt_speed_mm_s"] = belt
    recipe = yaml.safe_load((ROOT / "recipes/plate-4h.yaml").read_text())
    recipe["cameras"] = {f"cam{i}": {} for i in range(cameras)}
    recipe["model"]["path"] = str(model)
    recipe["model"]["input_size"] = [input_size, input_size]
    recipe["images"] = {"save_rejected": False, "sample_passed_every": 0}
    (tmp / "recipes").mkdir(parents=True, exist_ok=True)
    cell_file, recipe_file = tmp / "cell.yaml", tmp / "recipes" / "bench.yaml"
    cell_file.write_text(yaml.safe_dump(cell))
    recipe_file.write_text(yaml.safe_dump(recipe))
    return cell_file, recipe_file


def run_cell(tmp: Path, cameras: int, ppm: float, model: Path, input_size: int) -> dict[str, Any]:
    cell, recipe = cell_and_recipe(tmp, cameras, ppm, model, input_size)
    parts = max(60, int(ppm * SECONDS / 60))
    opts = DemoOptions(
        parts=parts, cameras=cameras, headless=True, parts_per_min=ppm, cell=cell, recipe=recipe,
        data_dir=tmp, socket=tmp / "cell.sock",
    )  # fmt: skip
    t0 = time.monotonic()
    r = asyncio.run(_demo(opts, tmp))
    late = {k: v for k, v in r["rejects_by_reason"].items() if k.startswith("no_decision:")}
    return {
        "cameras": cameras, "parts_per_min": ppm, "belt_mm_s": max(1000.0, ppm * MIN_PITCH_MM / 60.0),
        "parts": r["parts"], "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
        "no_decision": r["no_decision"], "why": late, "lost": r["lost"], "misrouted": r["misrouted"],
        "wall_s": round(time.monotonic() - t0, 1),
    }  # fmt: skip


def sweep(
    tmp: Path, label: str, model: Path, size: int, cams: list[int], speeds: list[float]
) -> list[dict[str, Any]]:
    rows = []
    for k in cams:
        for ppm in speeds:
            row = run_cell(tmp / f"{label}-{k}-{int(ppm)}", k, ppm, model, size) | {"model": label}
            rows.append(row)
            print(
                f"| {label} | {k} | {ppm:.0f} | {row['belt_mm_s']:.0f} | {row['p50_ms']} | {row['p99_ms']} "
                f"| {row['no_decision']} {row['why'] or ''} | {row['lost']} | {row['misrouted']} |",
                flush=True,
            )
            if row["no_decision"] or row["lost"] or row["misrouted"]:
                break  # it started rejecting for lack of time: the next speed would too
    return rows


@pytest.mark.timeout(3600)
def test_cell_at_increasing_line_speed(tmp_path: Path) -> None:
    mobilenet = build(
        OUT / "mobilenet_like.onnx", width=float(os.environ.get("BENCH_MOBILENET_WIDTH", "0.6"))
    )
    print("\n| model | cameras | parts/min | belt mm/s | p50 ms | p99 ms | no decision | lost | misrouted |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = sweep(tmp_path, "demo", ROOT / "recipes/models/demo_defects.onnx", 64, [1, 2, 4, 8],
                 [600, 1200, 2400, 4800, 7200, 9600])  # fmt: skip
    rows += sweep(tmp_path, "mobilenet-like", mobilenet, 224, [4], [600, 1200, 1500, 1800, 2400, 3000, 3600])
    OUT.mkdir(exist_ok=True)
    (OUT / "cell_sweep.json").write_text(json.dumps(rows, indent=2))
    plot(rows, OUT / "cell_sweep.png")
    assert rows and all(r["parts"] > 0 for r in rows)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no plot")
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for model, k in sorted({(r["model"], r["cameras"]) for r in rows}):
        pts = [r for r in rows if r["model"] == model and r["cameras"] == k and r["p99_ms"] is not None]
        ax.plot([r["parts_per_min"] for r in pts], [r["p99_ms"] for r in pts], marker="o",
                label=f"{model}, {k} camera{'s' if k > 1 else ''}")  # fmt: skip
        bad = [r for r in pts if r["no_decision"]]
        ax.scatter(
            [r["parts_per_min"] for r in bad], [r["p99_ms"] for r in bad], marker="x", s=80, color="red"
        )
    ax.set_xlabel("parts/min")
    ax.set_ylabel("trigger to verdict p99 (ms)")
    ax.set_yscale("log")
    ax.set_title("Simulated cell, 2 CPU cores (x: rejects for lack of time)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")
