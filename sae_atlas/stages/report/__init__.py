"""Export an atlas as a static report: one self-contained HTML page and its Markdown twin.

`write_report(atlas, out)` (`stage`) reads the atlas and writes `out/index.html` (inline CSS,
figures as base64 PNG, no scripts, no external URL), `out/report.md` and `out/figures/*.png`.
Both formats render one list of blocks (`document`: `Heading`, `Text`, `Table`, `Figure`), so
they cannot disagree (`render`). Sections: overview (`overview`), persona space, feature map,
clusters and puppeteer features (`sections`), dynamics (`dynamics_section`); figures in
`figures`, what the atlas records as JSON in `reading`. Cost: a few seconds for 16k features.
"""

from sae_atlas.stages.report.document import (
    MAX_TABLE_ROWS,
    Block,
    Cell,
    Context,
    Figure,
    Heading,
    Link,
    Part,
    Table,
    Target,
    Text,
    fmt,
    plural,
    split_context,
    table,
    text,
    visible,
)
from sae_atlas.stages.report.dynamics_section import dynamics_entry, dynamics_section
from sae_atlas.stages.report.figures import (
    KIND_COLORS,
    axis_in_plane,
    bars_figure,
    coords_2d,
    drift_figure,
    feature_map_figure,
    matrix_figure,
    persona_space_figure,
)
from sae_atlas.stages.report.overview import QUALITY_KEYS, overview, sae_quality
from sae_atlas.stages.report.reading import default_persona, flatten, json_attr, parse_personas
from sae_atlas.stages.report.render import CSS, md_escape, render_html, render_markdown
from sae_atlas.stages.report.sections import (
    EXAMPLE_FEATURES,
    EXAMPLES_PER_FEATURE,
    MAX_MEMBERS,
    ReportBuilder,
)
from sae_atlas.stages.report.stage import REPORT_STEPS, ReportResult, contents, write_report

__all__ = [
    "CSS",
    "EXAMPLES_PER_FEATURE",
    "EXAMPLE_FEATURES",
    "KIND_COLORS",
    "MAX_MEMBERS",
    "MAX_TABLE_ROWS",
    "QUALITY_KEYS",
    "REPORT_STEPS",
    "Block",
    "Cell",
    "Context",
    "Figure",
    "Heading",
    "Link",
    "Part",
    "ReportBuilder",
    "ReportResult",
    "Table",
    "Target",
    "Text",
    "axis_in_plane",
    "bars_figure",
    "contents",
    "coords_2d",
    "default_persona",
    "drift_figure",
    "dynamics_entry",
    "dynamics_section",
    "feature_map_figure",
    "flatten",
    "fmt",
    "json_attr",
    "matrix_figure",
    "md_escape",
    "overview",
    "parse_personas",
    "persona_space_figure",
    "plural",
    "render_html",
    "render_markdown",
    "sae_quality",
    "split_context",
    "table",
    "text",
    "visible",
    "write_report",
]
