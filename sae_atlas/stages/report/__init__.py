"""Export an atlas as a static report: one self-contained HTML page and its Markdown twin.

`write_report(atlas, out)` (`stage`) reads the atlas and writes `out/index.html` (inline CSS,
figures as base64 PNG, no scripts, no external URL), `out/report.md` and `out/figures/*.png`.
Both formats render one list of blocks (`document`: `Heading`, `Text`, `Table`, `Figure`), so
they cannot disagree (`render`). Sections: overview (`overview`), persona space, feature map,
clusters and puppeteer features (`sections`), format features and the puppeteer's null
(`label_sections`), dynamics (`dynamics_section`), one section per experiment the atlas holds
(`experiments`, with `selection_sections`, `label_sections` and `audit_section`); figures in
`figures`, what the atlas records as JSON in `reading`. Cost: a few seconds for 16k features.
"""

from sae_atlas.stages.report.document import (
    Block,
    Context,
    Figure,
    Heading,
    Link,
    Table,
    Text,
    split_context,
)
from sae_atlas.stages.report.render import md_escape, render_html, render_markdown
from sae_atlas.stages.report.sections import EXAMPLE_FEATURES, MAX_MEMBERS
from sae_atlas.stages.report.stage import REPORT_STEPS, ReportResult, write_report

__all__ = [
    "EXAMPLE_FEATURES",
    "MAX_MEMBERS",
    "REPORT_STEPS",
    "Block",
    "Context",
    "Figure",
    "Heading",
    "Link",
    "ReportResult",
    "Table",
    "Text",
    "md_escape",
    "render_html",
    "render_markdown",
    "split_context",
    "write_report",
]
