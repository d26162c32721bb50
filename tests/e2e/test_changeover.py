"""Recipe changeover on the running simulated line: by PLC request and from the CLI."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from controller.cli import main
from controller.config import content_hash, load_recipe
from controller.contract import RecipeResult
from controller.demo import DemoOptions, _demo

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_changeover_mid_run_only_changes_later_parts(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    shutil.copytree(ROOT / "recipes", recipes, ignore=shutil.ignore_patterns("cells"))
    broken = (recipes / "plate-4h.yaml").read_text().replace("number: 1", "number: 7\nbogus: 1")
    (recipes / "broken.yaml").write_text(broken.replace("name: plate-4h", "name: broken"))
    sock = tmp_path / "cell.sock"
    seen: dict[str, Any] = {}

    async def scenario(sim: Any, service: Any) -> None:
        while service.core.counts["parts"] < 150:
            await asyncio.sleep(0.05)
        seen["unknown"] = await asyncio.to_thread(sim.request_recipe, 99)
        seen["invalid_cli"] = await asyncio.to_thread(
            main, ["recipe", "activate", "broken", "--socket", str(sock)]
        )
        seen["still"] = service.recipe.name
        seen["plc"] = await asyncio.to_thread(sim.request_recipe, 2)
        seen["boundary"] = service.core.recipe_from_part
        seen["busy_or_pending"] = service.core.recipe_refusal()

    opts = DemoOptions(parts=500, cameras=3, headless=True, data_dir=tmp_path, socket=sock,
                       recipe=recipes / "plate-4h.yaml")  # fmt: skip
    r = asyncio.run(_demo(opts, tmp_path, scenario))
    print(json.dumps(seen), json.dumps(r["counters"]))
    assert seen["unknown"] == RecipeResult.UNKNOWN_NUMBER
    assert seen["invalid_cli"] == 1 and seen["still"] == "plate-4h"
    assert seen["plc"] == RecipeResult.ACTIVE
    assert r["lost"] == 0 and r["misrouted"] == 0
    assert not any(k.startswith("missing_frame") for k in r["counters"])  # triggers moved with the recipe

    old = content_hash(load_recipe(recipes / "plate-4h.yaml"))
    new = content_hash(load_recipe(recipes / "plate-4h-long.yaml"))
    with sqlite3.connect(r["database"]) as db:
        rows = db.execute("SELECT part_id, recipe_hash FROM parts ORDER BY part_id").fetchall()
        audit = db.execute("SELECT source, to_recipe, result, reason FROM audit ORDER BY rowid").fetchall()
    boundary = seen["boundary"]
    assert 150 < boundary < 500
    assert all(h == old for pid, h in rows if pid < boundary)
    assert all(h == new for pid, h in rows if pid >= boundary)
    assert [(a[0], a[2]) for a in audit] == [("plc", "UNKNOWN_NUMBER"), ("api", "INVALID"), ("plc", "ACTIVE")]
    assert "bogus" in audit[1][3]
