"""The report stage: an atlas in, a static report out.

`write_report(atlas, out)` reads the atlas (a path, opened with `Atlas.open`, or an open Atlas)
and writes into the folder `out`:
- `index.html`: inline CSS, figures embedded as base64 PNG, no scripts, no external URL (it
  opens offline, from a file or an e-mail attachment);
- `report.md` with the same content, its figures as `figures/*.png`.
Sections (REPORT_STEPS): overview, persona space, feature map, one section per cluster, the
puppeteer features, format features and the puppeteer's null (when the labels summary holds
them), dynamics ("not computed" when the atlas has no dynamics/), and one section per experiment
the atlas holds (experiments/<name>: selection, attractors, puppeteer_causal, honest_splits,
audit, ...; none when it holds none). Every internal
link is a #anchor of a section written in the same page. The report is always rewritten (it is
cheap and records nothing to skip by). Cost: a few seconds for 16k features (see `sections`,
`figures`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from feature_store.atlas import Atlas
from sae_atlas.stages.base import StageResult, StepProgress, Stopwatch
from sae_atlas.stages.report.document import Block, Figure, Heading, Link, Part, Text
from sae_atlas.stages.report.dynamics_section import dynamics_section
from sae_atlas.stages.report.experiments import experiment_sections
from sae_atlas.stages.report.label_sections import labels_blocks
from sae_atlas.stages.report.overview import overview
from sae_atlas.stages.report.render import render_html, render_markdown
from sae_atlas.stages.report.sections import EXAMPLE_FEATURES, MAX_MEMBERS, ReportBuilder

REPORT_STEPS = (
    "overview",
    "persona_space",
    "feature_map",
    "clusters",
    "puppeteer",
    "labels",
    "dynamics",
    "experiments",
    "write",
)
"""The steps `write_report` reports to `progress`, in order."""


@dataclass(frozen=True)
class ReportResult(StageResult):
    """What `write_report` wrote: `path` the report folder, the HTML page, the Markdown file,
    its figures, the number of clusters reported, and the seconds per step."""

    html: Path
    markdown: Path
    figures: list[Path]
    n_clusters: int
    timings: dict[str, float]


@contextmanager
def opened(atlas: str | Path | Atlas) -> Iterator[Atlas]:
    """`atlas` itself (left open), or the atlas at that path, closed afterwards."""
    if isinstance(atlas, Atlas):
        yield atlas
        return
    with Atlas.open(atlas) as reader:
        yield reader


def contents(blocks: Sequence[Block]) -> list[Block]:
    """A table of contents linking every level-2 heading."""
    parts: list[Part] = ["Contents: "]
    for i, block in enumerate(b for b in blocks if isinstance(b, Heading) and b.level == 2):
        parts += [" · " if i else "", Link(block.text, block.anchor)]
    return [Text(tuple(parts))]


def report_body(
    atlas: Atlas, max_members: int, example_features: int, clock: Stopwatch
) -> tuple[list[Block], int]:
    """The blocks of every section, each step timed on `clock`, and the number of clusters."""
    builder = ReportBuilder(atlas, max_members, example_features)
    sections: dict[str, Callable[[], list[Block]]] = {
        "overview": lambda: overview(atlas),
        "persona_space": builder.persona_space,
        "feature_map": builder.feature_map,
        "clusters": builder.cluster_sections,
        "puppeteer": builder.puppeteer,
        "labels": lambda: labels_blocks(atlas),
        "dynamics": lambda: dynamics_section(atlas),
        "experiments": lambda: experiment_sections(atlas),
    }
    body: list[Block] = []
    for step, section in sections.items():
        with clock.step(step):
            body += section()
    return body, len(builder.clusters)


def write_files(out: Path, title: str, blocks: Sequence[Block]) -> tuple[Path, Path, list[Path]]:
    """Write figures/*.png (replacing earlier ones), index.html and report.md into `out`;
    returns the HTML and Markdown paths and the figures'."""
    figure_dir = out / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    for stale in figure_dir.glob("*.png"):
        stale.unlink()
    figures = []
    for block in blocks:
        if isinstance(block, Figure):
            path = figure_dir / f"{block.name}.png"
            path.write_bytes(block.png)
            figures.append(path)
    html_path = out / "index.html"
    markdown_path = out / "report.md"
    html_path.write_text(render_html(title, blocks), encoding="utf-8")
    markdown_path.write_text(render_markdown(title, blocks, "figures"), encoding="utf-8")
    return html_path, markdown_path, figures


def write_report(
    atlas: str | Path | Atlas,
    out: str | Path,
    *,
    max_members: int = MAX_MEMBERS,
    example_features: int = EXAMPLE_FEATURES,
    progress: StepProgress | None = None,
) -> ReportResult:
    """Write index.html, report.md and figures/*.png for `atlas` (an atlas.h5 or an open Atlas)
    into the folder `out` (created if needed); an earlier report there is replaced, figures/*.png
    included. `max_members`: members listed per cluster (densest first); `example_features`:
    members per cluster (and puppeteer features) whose top examples are shown. `progress(step)`
    as each of REPORT_STEPS starts."""
    started = time.perf_counter()
    out = Path(out)
    clock = Stopwatch(progress)
    with opened(atlas) as source:
        title = f"sae-atlas report: {source.attrs.get('model', 'unknown model')}"
        body, n_clusters = report_body(source, max_members, example_features, clock)
    with clock.step("write"):
        html_path, markdown_path, figures = write_files(out, title, [*contents(body), *body])
    return ReportResult(
        out,
        seconds=time.perf_counter() - started,
        skipped=False,
        html=html_path,
        markdown=markdown_path,
        figures=figures,
        n_clusters=n_clusters,
        timings=clock.seconds,
    )
