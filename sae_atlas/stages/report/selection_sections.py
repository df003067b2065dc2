"""The report's sections of the persona-selection experiment (experiments/selection) and of the
long rollouts (experiments/attractors): the figures of sae_atlas.stages.selection.figures and
their tables, each introduced by what it shows, its interval and its null. Cost: reading the two
experiments' tables and four or five figures (about a second).
"""

from __future__ import annotations

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


def _frame(experiment: Experiment, name: str) -> pd.DataFrame | None:
    data = experiment.tables.get(name)
    return data if isinstance(data, pd.DataFrame) and not data.empty else None


def selection_blocks(experiment: Experiment) -> list[Block]:
    """Decoding by position, header gains, patching effects and contrasts, relaxation."""
    summary = experiment.summary
    blocks: list[Block] = [
        text(
            f"Personas: {fmt(summary.get('personas'))}; {fmt(summary.get('header_tokens'))} "
            f"assistant-header tokens; patches at layer {fmt(summary.get('layer'))}."
        )
    ]
    decoding = _frame(experiment, "decoding")
    if decoding is not None:
        blocks += [
            Heading(3, "Where the persona is decoded", "selection-decoding"),
            text(
                "How well each persona is told from the others at each position (system prompt, "
                "user turn, each header token, response tokens): one-vs-rest AUROC of a "
                "nearest-centroid probe cross-fitted over prompt variants and questions, from "
                "the residual (left) and the SAE's codes (right); bands: bootstrap 95% intervals "
                "over questions; dotted: chance (0.5)."
            ),
            Figure("selection_decoding", position_curve_figure(decoding), "decoding by position"),
        ]
    gain = _frame(experiment, "header_gain")
    if gain is not None:
        blocks += [
            text(
                "AUROC at the last header token (and response token 1) minus at the user turn, "
                "95% interval over questions, one-sided p and BH q over personas:"
            ),
            *head_table(gain),
        ]
    blocks += _patching_blocks(_frame(experiment, "patching"))
    blocks += _relaxation_blocks(experiment)
    return blocks


def _patching_blocks(patching: pd.DataFrame | None) -> list[Block]:
    if patching is None:
        return []
    blocks: list[Block] = [
        Heading(3, "Patching the header", "selection-patching"),
        text(
            "Effect of patching the header residual of a persona run into the default run "
            "(rise) or of the default run into the persona run (fall), against the same patch at "
            "the last user tokens and another persona's header (the controls); paired by unit, "
            "95% intervals over questions. A header effect above its controls is where the "
            "persona is selected."
        ),
    ]
    for score in dict.fromkeys(patching["score"]):
        blocks.append(
            Figure(
                f"selection_patching_{score}",
                patching_figure(patching, str(score)),
                f"patching effects on the {score} score",
            )
        )
    contrasts = patching[patching["kind"] != "effect"]
    blocks.append(text("Paired contrasts (header minus control), BH q over personas:"))
    blocks += head_table(
        contrasts,
        ["score", "persona", "kind", "condition", "mean", "ci_low", "ci_high", "p_value",
         "q_value", "n"],
    )  # fmt: skip
    return blocks


def _relaxation_blocks(experiment: Experiment) -> list[Block]:
    blocks: list[Block] = []
    gap = _frame(experiment, "axis_gap")
    if gap is not None:
        blocks += [
            Heading(3, "Relaxation toward the assistant", "selection-relaxation"),
            text(
                "The default run's assistant-axis projection minus the condition's, by response "
                "token (every persona pooled), 95% intervals over questions; 0 is the default."
            ),
            Figure("selection_relaxation", relaxation_figure(gap), "assistant-axis gap"),
        ]
    relaxation = _frame(experiment, "relaxation")
    if relaxation is not None:
        blocks += [
            text(
                "Half-gap length: the first response token where the gap is at most half its "
                "first value (n_response + 1: never), bootstrap 95% interval over questions and "
                "the share of resamples censored; retained: the gap's share left at the end."
            ),
            *head_table(relaxation),
        ]
    return blocks


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
    resolution = _frame(experiment, "resolution")
    if resolution is not None:
        blocks += [
            text("Resolution: share of calibration turns placed in their persona's region:"),
            *head_table(resolution),
        ]
    flow = _frame(experiment, "flow")
    if flow is not None:
        blocks += [
            Heading(3, "Flow between regions", "attractors-flow"),
            text(
                "Per condition and region: gain (last-turn share minus occupancy) and hold "
                "(P(same region next turn)) with bootstrap 95% intervals over rollouts, against "
                "the permuted-turns null (BH q over conditions x regions), and the stationary "
                "share with its interval (empty: no observed exit, not a self-loop)."
            ),
            *head_table(flow, FLOW_SHOWN),
        ]
    back = _frame(experiment, "return_to_assistant")
    if back is not None:
        blocks += [
            Heading(3, "Back to the assistant", "attractors-return"),
            text(
                "P(in the assistant region k turns later | in the region now), bootstrap 95% "
                "intervals over rollouts; dashed: the permuted-turns null."
            ),
            Figure("attractors_return", return_figure(back), "return to the assistant region"),
        ]
    return blocks
