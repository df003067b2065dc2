from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_atlas import atlas_data, write_atlas

from feature_store.atlas import Atlas, AtlasWriter
from sae_atlas.stages.report import (
    REPORT_STEPS,
    Context,
    Table,
    md_escape,
    render_html,
    split_context,
    write_report,
)

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]


def add_dynamics(path: Path) -> Path:
    """The synthetic atlas with the dynamics/ entries sae_atlas.stages.dynamics computes."""
    drift = pd.DataFrame(
        {
            "group": ["pirate"] * 3 + ["villain"] * 3,
            "turn": [0, 1, 2] * 2,
            "mean": [-1.0, -0.4, 0.2, -2.0, -1.5, -1.4],
            "ci_low": [-1.2, -0.6, 0.0, -2.3, -1.8, -1.7],
            "ci_high": [-0.8, -0.2, 0.4, -1.7, -1.2, -1.1],
            "n": [5] * 6,
        }
    )
    attractors = pd.DataFrame(
        {"regions": ["assistant", "villain"], "stationary_mass": [0.8, 0.2], "basin": ["a", "b"]}
    )
    with AtlasWriter.extend(path) as writer:
        writer.write_dynamics("region_names", np.array(["assistant", "villain"]), "region names")
        writer.write_dynamics("transition_matrix", np.array([[0.9, 0.1], [0.3, 0.7]]), "P")
        writer.write_dynamics("stationary", np.array([0.75, 0.25]), "stationary distribution")
        writer.write_dynamics(
            "attractors",
            attractors,
            "attractors",
            column_descriptions={c: c for c in attractors.columns},
        )
        writer.write_dynamics(
            "drift", drift, "drift curves", column_descriptions={c: c for c in drift.columns}
        )
    return path


@pytest.fixture
def tricky_data() -> dict:
    """The synthetic atlas with text that must be escaped and contexts with a marked token."""
    data = atlas_data()
    data["features"].loc[0, "label"] = "<script>alert('x')</script> & pirates"
    data["clusters"].loc[0, "label"] = 'pirate "talk" <b>'
    data["examples"].loc[3, "context"] = "Ahoy <matey>[[ Arr]]\nhere & there"
    return data


@pytest.fixture
def report(tmp_path, tricky_data):
    atlas = add_dynamics(write_atlas(tmp_path / "atlas.h5", tricky_data))
    return write_report(atlas, tmp_path / "report")


def anchors(page: str) -> tuple[set[str], list[str]]:
    """(ids defined, #targets linked) of an HTML page."""
    return set(re.findall(r'\sid="([^"]+)"', page)), re.findall(r'href="#([^"]*)"', page)


def test_report_is_self_contained_and_links_resolve(report):
    page = report.html.read_text(encoding="utf-8")
    assert report.html.name == "index.html" and report.n_clusters == 5
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page, flags=re.IGNORECASE)
    assert "<script" not in page and "@import" not in page and "url(" not in page
    assert '<link rel="stylesheet"' not in page
    ids, targets = anchors(page)
    assert targets and not [t for t in targets if t not in ids]
    for cluster in range(5):
        assert f'href="#cluster-{cluster}"' in page and f'id="cluster-{cluster}"' in page
    assert page.count('src="data:image/png;base64,') == len(report.figures) == 5
    for section in ("overview", "persona-space", "feature-map", "clusters", "puppeteer"):
        assert f'id="{section}"' in page


def test_report_escapes_text_and_marks_tokens(report):
    page = report.html.read_text(encoding="utf-8")
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; pirates" in page
    assert "pirate &quot;talk&quot; &lt;b&gt;" in page
    assert "Ahoy &lt;matey&gt;<mark> Arr</mark>↵here &amp; there" in page
    assert "ctx0 b" in page  # a context without a mark is shown whole


def test_report_sections_content(report):
    page = report.html.read_text(encoding="utf-8")
    assert "Dynamics: not computed" not in page
    for name in ("transition_matrix", "stationary", "attractors", "drift"):
        assert f'id="dynamics-{name}"' in page
    assert "stationary_mass" in page  # the attractors table
    assert {p.name for p in report.figures} == {
        "persona_space.png",
        "feature_map.png",
        "dynamics_transition_matrix.png",
        "dynamics_stationary.png",
        "dynamics_drift.png",
    }
    for figure in report.figures:
        assert figure.read_bytes().startswith(b"\x89PNG")
    puppeteer = page[page.index('id="puppeteer"') : page.index('id="dynamics"')]
    assert '<a href="#cluster-3">3</a>' in puppeteer  # features 5 and 6, cluster 3
    cluster_0 = page[page.index('id="cluster-0"') : page.index('id="cluster-1"')]
    assert '<a href="#persona-1">pirate</a> (2 features' in cluster_0
    assert "default persona: " in page and '<a href="#persona-0">assistant</a>' in page


def test_markdown_twin(report):
    markdown = report.markdown.read_text(encoding="utf-8")
    assert report.markdown == report.path / "report.md"
    assert markdown.startswith("# sae-atlas report: tiny")
    for figure in report.figures:
        assert f"](figures/{figure.name})" in markdown and figure.exists()
    ids = set(re.findall(r'<a id="([^"]+)"></a>', markdown))
    targets = re.findall(r"\]\(#([^)]*)\)", markdown)
    assert targets and not [t for t in targets if t not in ids]
    assert "Ahoy \\<matey\\>** Arr**↵here & there" in markdown
    assert "\\<script\\>alert" in markdown


def test_missing_dynamics_capped_members_and_build_records(tmp_path):
    attrs = {
        "hook": "blocks.3.hook_resid_post",
        "sae_evaluation": json.dumps({"activations": {"explained_variance": 0.81, "l0": 32.5}}),
        "organize_summary": json.dumps({"persona_space": {"default_persona": "poet"}}),
    }
    atlas = write_atlas(tmp_path / "atlas.h5", atlas_data(), attrs=attrs)
    result = write_report(atlas, tmp_path / "out", max_members=1, example_features=0)
    page = result.html.read_text(encoding="utf-8")
    assert "<td>hook</td><td>blocks.3.hook_resid_post</td>" in page
    assert "<td>sae_evaluation: activations.explained_variance</td><td>0.81</td>" in page
    assert "<td>sae_evaluation: activations.l0</td><td>32.5</td>" in page
    assert 'default persona: <a href="#persona-3">poet</a>' in page
    assert 'id="build-records"' in page and "organize_summary" in page
    assert "Dynamics: not computed" in page
    assert "not computed" in result.markdown.read_text(encoding="utf-8")
    assert "3 features, stability 0.9; showing 1 by density" in page
    assert "Top examples" not in page.split('id="puppeteer"')[0]
    assert len(result.figures) == 2


def test_an_open_atlas_reports_as_its_path_does_and_steps_are_reported(tmp_path, tricky_data):
    path = add_dynamics(write_atlas(tmp_path / "atlas.h5", tricky_data))
    steps: list[str] = []
    from_path = write_report(path, tmp_path / "a", progress=steps.append)
    with Atlas.open(path) as atlas:
        from_atlas = write_report(atlas, tmp_path / "b")
        assert atlas.features() is not None  # still open: write_report leaves it to the caller
    assert steps == list(REPORT_STEPS) and set(from_path.timings) == set(REPORT_STEPS)
    assert not from_path.skipped and from_path.path == tmp_path / "a"
    for made in ("index.html", "report.md", *(f"figures/{p.name}" for p in from_path.figures)):
        assert (from_path.path / made).read_bytes() == (from_atlas.path / made).read_bytes()


def test_context_helpers():
    assert split_context("a[[b]]c[[d]]") == ("a", "b", "c[[d]]")
    assert split_context("plain") == ("plain", "", "")
    assert md_escape("a|b*c") == "a\\|b\\*c"
    page = render_html("t<", [Table(("h",), ((Context("[[x]]"),),))])
    assert "<mark>x</mark>" in page and "<title>t&lt;</title>" in page


CHECK_PAGE = """<!DOCTYPE html><html><body>
<iframe id="report" src="{url}" width="1280" height="2000"></iframe><pre id="result">pending</pre>
<script>
window.addEventListener("load", () => {{
  const page = document.getElementById("report").contentDocument;
  const out = {{images: 0, links: 0, problems: []}};
  if (!page) {{ out.problems.push("cannot read the report's DOM"); }} else {{
    for (const image of page.images) {{
      out.images++;
      if (!image.complete || image.naturalWidth === 0) out.problems.push("image " + image.alt);
    }}
    for (const link of page.querySelectorAll("a[href]")) {{
      out.links++;
      const href = link.getAttribute("href");
      if (!href.startsWith("#") || !page.getElementById(decodeURIComponent(href.slice(1))))
        out.problems.push("link " + href);
    }}
    out.title = page.title;
    out.sections = page.querySelectorAll("h2").length;
  }}
  document.getElementById("result").textContent = JSON.stringify(out);
}});
</script></body></html>
"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Debian chromium, offline, console messages logged to stderr."""
    profile = tmp_path / "chromium-profile"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def console_messages(stderr: str) -> list[str]:
    """Console output of the page (chromium logs it as ':CONSOLE' lines with --enable-logging)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def browser_check(tmp_path: Path, html: Path) -> tuple[dict, list[str]]:
    """Load `html` in an iframe of a checking page; returns its findings and console lines."""
    check = tmp_path / f"check_{html.parent.name}.html"
    check.write_text(CHECK_PAGE.format(url=html.resolve().as_uri()), encoding="utf-8")
    result = chromium(
        tmp_path,
        "--allow-file-access-from-files",
        "--virtual-time-budget=10000",
        "--dump-dom",
        check.as_uri(),
    )
    found = re.search(r'<pre id="result">(.*?)</pre>', result.stdout, flags=re.DOTALL)
    assert found, result.stdout[-2000:]
    return json.loads(found.group(1)), console_messages(result.stderr)


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless browser test needs Debian's chromium at /usr/bin/chromium "
    "(apt-get install -y chromium)",
)
def test_report_in_headless_chromium(report, tmp_path):
    findings, console = browser_check(tmp_path, report.html)
    assert findings["problems"] == [] and console == [], (findings, console)
    assert findings["images"] == 5 and findings["links"] > 20 and findings["sections"] == 6
    assert findings["title"] == "sae-atlas report: tiny"

    broken = tmp_path / "broken" / "index.html"
    broken.parent.mkdir()
    broken.write_text(
        report.html.read_text(encoding="utf-8").replace(
            "</main>", '<a href="#nowhere">x</a><img src="missing.png" alt="gone"></main>'
        ),
        encoding="utf-8",
    )
    findings, _ = browser_check(tmp_path, broken)
    assert findings["problems"] == ["image gone", "link #nowhere"]

    screenshot = tmp_path / "report_screenshot.png"
    result = chromium(
        tmp_path,
        f"--screenshot={screenshot}",
        "--window-size=1280,2000",
        "--hide-scrollbars",
        report.html.resolve().as_uri(),
    )
    assert console_messages(result.stderr) == []
    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 10_000
    print(f"report screenshot: {screenshot}")
    if (REPO / "runs").is_dir():
        shutil.copyfile(screenshot, REPO / "runs" / "report_screenshot.png")
        print(f"report screenshot copied to {REPO / 'runs' / 'report_screenshot.png'}")


# -- experiments and the labels summary -------------------------------------------------------

RENDERED = ("selection", "attractors", "puppeteer_causal", "honest_splits", "audit")


def experiment_atlas(tmp_path: Path, names: tuple[str, ...], labels: bool = False) -> Path:
    """The synthetic atlas with the synthetic experiments `names` (and a labels summary)."""
    from sae_atlas.testing.experiments import labels_summary, record_synthetic_experiments

    attrs = {"labels_summary": json.dumps(labels_summary())} if labels else None
    atlas = write_atlas(tmp_path / "atlas.h5", atlas_data(), attrs=attrs)
    return record_synthetic_experiments(atlas, names)


def test_each_recorded_experiment_gets_its_section_and_figures(tmp_path):
    result = write_report(experiment_atlas(tmp_path, RENDERED, labels=True), tmp_path / "r")
    page = result.html.read_text(encoding="utf-8")
    markdown = result.markdown.read_text(encoding="utf-8")
    ids, targets = anchors(page)
    assert not [t for t in targets if t not in ids]
    for name in RENDERED:
        assert f'id="experiment-{name}"' in page and f"(#experiment-{name})" in markdown
    assert {p.name for p in result.figures} >= {
        "selection_decoding.png",
        "selection_patching_classifier.png",
        "selection_patching_features.png",
        "selection_relaxation.png",
        "attractors_return.png",
        "puppeteer_causal.png",
    }
    for figure in result.figures:
        assert figure.read_bytes().startswith(b"\x89PNG")
    assert "Recorded by sae_atlas.testing" in page
    assert "bootstrap 95% intervals over questions" in page  # every section says its interval
    assert "matched random" in page and "permuted-turns null" in page
    assert "share AUROC&gt;=0.9: response_probe" in page  # honest splits, old against new
    assert "Verdict: trigger-gated persona found: &lt;w0&gt;" in page  # the audit
    assert "Arr, I sail the seas." in page and "<td>0.95</td>" in page
    audit = page[page.index('id="experiment-audit"') :]
    assert "&lt;w8&gt;" not in audit  # null candidates are not among the top candidates
    assert 'id="labels"' in page and "held-out R^2 &gt;= 0.5" in page  # the labels summary
    assert page.index('id="labels"') < page.index('id="dynamics"') < page.index('id="experiment-')


def test_absent_experiments_get_no_section(tmp_path):
    result = write_report(experiment_atlas(tmp_path, ()), tmp_path / "r")
    page = result.html.read_text(encoding="utf-8")
    assert "experiment-" not in page and 'id="labels"' not in page
    assert len(result.figures) == 2  # persona space and feature map only


@pytest.mark.parametrize("name", RENDERED)
def test_one_experiment_gets_one_section(tmp_path, name):
    page = write_report(experiment_atlas(tmp_path, (name,)), tmp_path / "r").html.read_text(
        encoding="utf-8"
    )
    assert re.findall(r'id="experiment-([a-z_]+)"', page) == [name]


def test_another_experiment_is_shown_generically(tmp_path):
    from feature_store.atlas import ExperimentRecord, record_experiment

    atlas = experiment_atlas(tmp_path, ())
    rows = pd.DataFrame({"layer": [6, 15], "persona_decoding": [0.1, 0.16]})
    record_experiment(
        atlas,
        ExperimentRecord(
            "layer_sweep", {"rows": rows}, {"tokens_per_sae": 300000}, {"rows": "per layer"},
            {"layer": "layer", "persona_decoding": "accuracy"}, "scripts/layer_sweep.py", {}, 3.0,
        ),
    )  # fmt: skip
    page = write_report(atlas, tmp_path / "r").html.read_text(encoding="utf-8")
    assert 'id="experiment-layer_sweep"' in page and "<td>tokens_per_sae</td>" in page
    assert "<td>0.16</td>" in page


def test_an_older_atlas_reports_its_dynamics_experiments_once(tmp_path):
    from sae_atlas.testing.experiments import synthetic_experiments

    selection = synthetic_experiments()["selection"]
    atlas = write_atlas(tmp_path / "atlas.h5", atlas_data())
    with AtlasWriter.extend(atlas) as writer:
        for name, data in selection.tables.items():
            writer.write_dynamics(f"selection_{name}", data, selection.descriptions[name],
                                  column_descriptions=selection.columns)  # fmt: skip
        writer.write_dynamics("selection_summary", json.dumps(selection.summary), "summary")
    result = write_report(atlas, tmp_path / "r")
    page = result.html.read_text(encoding="utf-8")
    assert 'id="experiment-selection"' in page and "selection_decoding.png" in {
        p.name for p in result.figures
    }
    assert 'id="dynamics-selection_decoding"' not in page  # not twice
