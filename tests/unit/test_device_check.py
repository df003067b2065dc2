"""scripts/device_check.py in its --small form: every step runs on the CPU and reports a rate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCRIPTS = Path(__file__).parents[2] / "scripts"


def test_small_device_check_measures_every_step(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    import device_check

    path = device_check.main(["--small", "--device", "cpu", "--work", str(tmp_path / "run")])
    assert path == tmp_path / "out" / "device_check_small.json"
    report = json.loads(path.read_text())
    steps = {row["step"]: row for row in report["steps"]}
    assert list(steps) == ["model", "corpus", "harvest", "train", "label"]
    assert steps["harvest"]["tokens"] == steps["label"]["tokens"] > 3000
    assert all(steps[s]["tokens_per_s"] > 0 for s in ("harvest", "train", "label"))
    assert steps["train"]["steps"] == 5 and steps["label"]["features"] == 256
    assert report["versions"]["sae-lens"] != "missing"
    sys.modules.pop("device_check", None)
