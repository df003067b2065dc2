"""The report's sections of the persona-selection experiment (experiments/selection) and of the
long rollouts (experiments/attractors): the figures of sae_atlas.stages.selection.figures and
their tables, each introduced by what it shows, its interval and its null. Cost: reading the two
experiments' tables and four or five figures (about a second).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from feature_store.atlas import Experiment
from sae_atlas.stages.report.document import Block, Figure, Heading, fmt, head_table, text
from sae_atlas.stages.selection.figures import (
    patching_figure,
    position_curve_figure,
    relaxation_figure,
    return_figure,
)

FLOW_SHOWN = ["experiment", "region_name", "start_share", "end_share", "gain", "gain_low",
              "gain_high", "gain_q", "hold", "hold_null", "hold_excess_low", "hold_q",
              "stationary", "stationary_low", "stationary_high", "no_exit",
              "attractor"]  # fmt: skip
"""Columns of the attractors' flow table the report shows."""


@dataclass(frozen=True)
class Shown:
    """One table of an experiment as the report shows it: under `heading` (title, anchor; None:
    no heading), after `intro` (what it shows, its interval and null), drawn by `draw`."""

    table: str
    heading: tuple[str, str] | None
    intro: str
    draw: Callable[[pd.DataFrame], list[Block]] = head_table


def shown_blocks(experiment: Experiment, parts: tuple[Shown, ...]) -> list[Block]:
    """The blocks of each part whose table the experiment holds with rows, in order."""
    blocks: list[Block] = []
    for part in parts:
        frame = experiment.tables.get(part.table)
        if not isinstance(frame, pd.DataFrame) or frame.empty:
            continue
        if part.heading is not None:
            blocks.append(Heading(3, *part.heading))
        blocks += [text(part.intro), *part.draw(frame)]
    return blocks


def _figure(
    name: str, draw: Callable[[pd.DataFrame], bytes], caption: str
) -> Callable[[pd.DataFrame], list[Block]]:
    """A part's `draw` that shows the table as one figure."""
    return lambda frame: [Figure(name, draw(frame), caption)]


def _patching(patching: pd.DataFrame) -> list[Block]:
    blocks: list[Block] = [
        Figure(
            f"selection_patching_{score}",
            patching_figure(patching, str(score)),
            f"patching effects on the {score} score",
        )
        for score in dict.fromkeys(patching["score"])
    ]
    blocks.append(text("Paired contrasts (header minus control), BH q over personas:"))
    columns = ["score", "persona", "kind", "condition", "mean", "ci_low", "ci_high", "p_value",
               "q_value", "n"]  # fmt: skip
    return blocks + head_table(patching[patching["kind"] != "effect"], columns)


SELECTION_PARTS = (
    Shown(
        "decoding",
        ("Where the persona is decoded", "selection-decoding"),
        "How well each persona is told from the others at each position (system prompt, user "
        "turn, each header token, response tokens): one-vs-rest AUROC of a nearest-centroid "
        "probe cross-fitted over prompt variants and questions, from the residual (left) and the "
        "SAE's codes (right); bands: bootstrap 95% intervals over questions; dotted: chance "
        "(0.5).",
        _figure("selection_decoding", position_curve_figure, "decoding by position"),
    ),
    Shown(
        "header_gain",
        None,
        "AUROC at the last header token (and response token 1) minus at the user turn, 95% "
        "interval over questions, one-sided p and BH q over personas:",
    ),
    Shown(
        "patching",
        ("Patching the header", "selection-patching"),
        "Effect of patching the header residual of a persona run into the default run (rise) or "
        "of the default run into the persona run (fall), against the same patch at the last "
        "user tokens and another persona's header (the controls); paired by unit, 95% intervals "
        "over questions. A header effect above its controls is where the persona is selected.",
        _patching,
    ),
    Shown(
        "axis_gap",
        ("Relaxation toward the assistant", "selection-relaxation"),
        "The default run's assistant-axis projection minus the condition's, by response token "
        "(every persona pooled), 95% intervals over questions; 0 is the default.",
        _figure("selection_relaxation", relaxation_figure, "assistant-axis gap"),
    ),
    Shown(
        "relaxation",
        None,
        "Half-gap length: the first response token where the gap is at most half its first "
        "value ('> n': not within the n tokens read, censored), bootstrap 95% interval over "
        "questions and the share of resamples censored; retained: the gap's share left at the "
        "end; slope: the gap's change per token, with its interval and BH q.",
    ),
)
"""The selection experiment's tables in the report, in order."""

ATTRACTOR_PARTS = (
    Shown(
        "resolution",
        None,
        "Resolution: share of calibration turns placed in their persona's region:",
    ),
    Shown(
        "flow",
        ("Flow between regions", "attractors-flow"),
        "Per condition and region: gain (last-turn share minus occupancy) and hold (P(same "
        "region next turn)) with bootstrap 95% intervals over rollouts, against the "
        "permuted-turns null (BH q over conditions x regions), and the stationary share with its "
        "interval (empty: no observed exit, not a self-loop).",
        lambda frame: head_table(frame, FLOW_SHOWN),
    ),
    Shown(
        "return_to_assistant",
        ("Back to the assistant", "attractors-return"),
        "P(in the assistant region k turns later | in the region now), bootstrap 95% intervals "
        "over rollouts; dashed: the permuted-turns null.",
        _figure("attractors_return", return_figure, "return to the assistant region"),
    ),
)
"""The attractors experiment's tables in the report, in order."""


def selection_blocks(experiment: Experiment) -> list[Block]:
    """Decoding by position, header gains, patching effects and contrasts, relaxation."""
    summary = experiment.summary
    opening = text(
        f"Personas: {fmt(summary.get('personas'))}; {fmt(summary.get('header_tokens'))} "
        f"assistant-header tokens; patches at layer {fmt(summary.get('layer'))}."
    )
    return [opening, *shown_blocks(experiment, SELECTION_PARTS)]


def attractor_blocks(experiment: Experiment) -> list[Block]:
    """Rollouts, resolution, flow and claims, return to the assistant."""
    summary = experiment.summary
    claimed = summary.get("attractors") or []
    regions = summary.get("regions") or {}
    blocks: list[Block] = [
        text(
            f"Rollouts per condition: {fmt(summary.get('rollouts') or {})}; "
            f"{len(regions)} regions: "
            + "; ".join(f"{name} ({fmt(members)})" for name, members in regions.items())
            + "."
        ),
        text(
            "Claimed attractors (gain and hold excess above 0 in the bootstrap over rollouts and "
            "both q-values, against each rollout's turns permuted, at most the FDR): "
            + (
                "; ".join(f"{row['region_name']} ({row['experiment']})" for row in claimed)
                if claimed
                else "none"
            )
            + "."
        ),
    ]
    return blocks + shown_blocks(experiment, ATTRACTOR_PARTS)
