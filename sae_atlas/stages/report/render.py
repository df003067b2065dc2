"""The report's two formats: a standalone HTML page (inline CSS, figures as data: URIs, no
scripts, no external URL) and Markdown (anchors as <a id>, figures as files beside it), both from
the same blocks (`document`). Cost: string building, linear in the report's size.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sae_atlas.stages.report.document import (
    Block,
    Cell,
    Context,
    Heading,
    Link,
    Table,
    Target,
    Text,
    split_context,
    visible,
)

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#222;
line-height:1.45;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:1rem 2rem 4rem;background:#fff}
h1{border-bottom:2px solid #333}h2{border-bottom:1px solid #ccc;margin-top:2.5rem}
h3{margin-top:1.8rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.88rem}
th,td{border:1px solid #ddd;padding:.2rem .45rem;text-align:left;vertical-align:top}
th{background:#f0f0f0}tr:nth-child(even) td{background:#fbfbfb}
code.ctx{white-space:pre-wrap;font-size:.85rem}mark{background:#ffe066;padding:0 .1rem}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}nav ul{columns:2}a{color:#0b5cad}
"""


@dataclass(frozen=True)
class Markup:
    """How one format writes each kind of part of a cell: plain text (escaped), a link, a link
    target, an example context."""

    escape: Callable[[str], str]
    link: Callable[[Link], str]
    target: Callable[[Target], str]
    context: Callable[[Context], str]


def render_part(part: Cell, markup: Markup) -> str:
    """A cell (or a part of one) written in `markup`."""
    if isinstance(part, Link):
        return markup.link(part)
    if isinstance(part, Target):
        return markup.target(part)
    if isinstance(part, Text):
        return "".join(render_part(p, markup) for p in part.parts)
    if isinstance(part, Context):
        return markup.context(part)
    return markup.escape(part)


# -- HTML -------------------------------------------------------------------------------------


def html_context(context: Context) -> str:
    """The context in a code span, newlines shown as ↵, the marked token in <mark>."""
    before, token, after = (visible(p) for p in split_context(context.text))
    marked = f"<mark>{html.escape(token)}</mark>" if token else ""
    return f'<code class="ctx">{html.escape(before)}{marked}{html.escape(after)}</code>'


HTML = Markup(
    escape=html.escape,
    link=lambda part: f'<a href="#{html.escape(part.anchor)}">{html.escape(part.text)}</a>',
    target=lambda part: f'<span id="{html.escape(part.anchor)}">{html.escape(part.text)}</span>',
    context=html_context,
)


def render_html(title: str, blocks: Sequence[Block]) -> str:
    """A standalone HTML page of `blocks`: inline CSS, figures as data: URIs, no scripts."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>",
        f'<h1 id="top">{html.escape(title)}</h1>',
    ]
    for block in blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            out.append(
                f'<h{level} id="{html.escape(block.anchor)}">{html.escape(block.text)}</h{level}>'
            )
        elif isinstance(block, Text):
            out.append("<p>" + render_part(block, HTML) + "</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{render_part(c, HTML)}</td>" for c in row) + "</tr>"
                for row in block.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode(block.png).decode("ascii")
            caption = html.escape(block.caption)
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


# -- Markdown ---------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|])")


def md_escape(value: str) -> str:
    """`value` on one line (newlines as ↵) with Markdown's special characters escaped."""
    return _MD_SPECIAL.sub(r"\\\1", visible(value))


def markdown_context(context: Context) -> str:
    """The context escaped, the marked token in bold (a blank token shown by its repr)."""
    before, token, after = split_context(context.text)
    shown = md_escape(token) if token.strip() else repr(token).replace("'", "")
    marked = f"**{shown}**" if token else ""
    return f"{md_escape(before)}{marked}{md_escape(after)}"


MARKDOWN = Markup(
    escape=md_escape,
    link=lambda part: f"[{md_escape(part.text)}](#{part.anchor})",
    target=lambda part: f'<a id="{part.anchor}"></a>{md_escape(part.text)}',
    context=markdown_context,
)


def render_markdown(title: str, blocks: Sequence[Block], figure_dir: str) -> str:
    """Markdown of `blocks`; anchors as <a id>, figures linked as `figure_dir/<name>.png`."""
    out = [f"# {md_escape(title)}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            out += [
                f'<a id="{block.anchor}"></a>',
                "",
                "#" * block.level + " " + md_escape(block.text),
                "",
            ]
        elif isinstance(block, Text):
            out += [render_part(block, MARKDOWN), ""]
        elif isinstance(block, Table):
            out.append("| " + " | ".join(md_escape(h) for h in block.header) + " |")
            out.append("|" + "---|" * len(block.header))
            out += [
                "| " + " | ".join(render_part(c, MARKDOWN) for c in row) + " |"
                for row in block.rows
            ]
            out.append("")
        else:
            out += [f"![{md_escape(block.caption)}]({figure_dir}/{block.name}.png)", ""]
    return "\n".join(out)
