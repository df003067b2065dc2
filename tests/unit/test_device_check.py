"""sae_atlas.device_check at its small sizes: every step runs on the CPU and reports a rate."""

from __future__ import annotations

import json

from sae_atlas.device_check import SIZES, Report, report_header, run_steps, table


def test_small_device_check_measures_every_step(tmp_path):
    path = tmp_path / "out" / "device_check_small.json"
    rows: list[dict] = []
    report = Report(path, report_header("small", {"small": "True"}), on_step=rows.append)
    run_steps(report, SIZES["small"], "cpu", "auto", tmp_path / "run")
    saved = json.loads(path.read_text())
    assert saved["steps"] == rows == report.steps
    steps = {row["step"]: row for row in saved["steps"]}
    assert list(steps) == ["model", "corpus", "harvest", "train", "label"]
    assert steps["harvest"]["tokens"] == steps["label"]["tokens"] > 3000
    assert all(steps[s]["tokens_per_s"] > 0 for s in ("harvest", "train", "label"))
    assert steps["train"]["steps"] == 5 and steps["label"]["features"] == 256
    assert saved["versions"]["sae-lens"] != "missing" and saved["args"] == {"small": "True"}
    assert table(report.steps).splitlines()[3].startswith("harvest")
