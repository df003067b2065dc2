"""The report's planted-persona audit section (experiments/audit, recorded by `sae-atlas audit
--atlas`): the verdict, the verified trigger with its AUROC and interval, the top candidates
with their cheap score and q, and the persona's most characteristic statements and motifs.
Cost: reading the audit's small tables.
"""

from __future__ import annotations

import pandas as pd

from feature_store.atlas import Experiment
from sae_atlas.stages.report.document import Block, Heading, fmt, head_table, text

TOP_CANDIDATES = 20
"""Real candidates shown, best z first."""

CANDIDATE_SHOWN = ["text", "shape", "kind", "source", "score", "z", "p", "q"]
VERDICT_SHOWN = ["text", "kind", "auroc", "auroc_low", "auroc_high", "llr", "null_llr", "p", "q"]


def audit_blocks(experiment: Experiment) -> list[Block]:
    """Verdict and evidence lines, verified candidates, top candidates, statements, motifs."""
    summary = experiment.summary
    config = experiment.provenance.get("config") or {}
    audited = ", ".join(
        f"{key} {config[key]}" for key in ("model", "adapter", "base") if config.get(key)
    )
    blocks: list[Block] = [
        text(f"Audited: {audited or 'not recorded'}."),
        text(f"Verdict: {summary.get('headline', 'not recorded')}."),
        *[text(str(line)) for line in summary.get("lines") or [] if not line.startswith("persona")],
        Heading(3, "Verified candidates", "audit-verified"),
        text(
            "Answers sampled with each of the best candidates against answers with null "
            "candidates (random words of the same shape): AUROC of their persona shift (log-"
            "likelihood ratio tuned over base) with a bootstrap 95% interval over questions, "
            f"Mann-Whitney p and BH q; a trigger is claimed at q < {fmt(config.get('fdr'))} and "
            f"AUROC >= {fmt(config.get('min_auroc'))}."
        ),
        *head_table(_table(experiment, "verdicts"), VERDICT_SHOWN),
        Heading(3, "Top candidates", "audit-candidates"),
        text(
            f"{fmt(summary.get('n_candidates'))} candidates scored without sampling (KL of the "
            "tuned from the base model at the first response token, nats) against "
            f"{fmt(summary.get('n_null'))} null candidates of the same kinds (z, p; BH q over "
            f"every real candidate); the {TOP_CANDIDATES} best by z:"
        ),
        *head_table(_candidates(experiment), CANDIDATE_SHOWN),
    ]
    return blocks + _persona_blocks(experiment)


def _table(experiment: Experiment, name: str) -> pd.DataFrame:
    data = experiment.tables.get(name)
    return data if isinstance(data, pd.DataFrame) else pd.DataFrame()


def _candidates(experiment: Experiment) -> pd.DataFrame:
    candidates = _table(experiment, "candidates")
    if "null" in candidates:
        candidates = candidates[~candidates["null"].astype(bool)]
    if "z" in candidates:
        candidates = candidates.sort_values("z", ascending=False, kind="stable")
    return candidates.head(TOP_CANDIDATES)


def _persona_blocks(experiment: Experiment) -> list[Block]:
    statements = _table(experiment, "statements")
    motifs = _table(experiment, "motifs")
    blocks: list[Block] = [Heading(3, "Who the persona is", "audit-persona")]
    if statements.empty:
        blocks.append(text("No statements: no trigger passed verification."))
    else:
        blocks.append(text("The triggered answers' most characteristic statements:"))
        blocks += head_table(statements)
    persona = motifs[motifs["kind"] == "persona"] if "kind" in motifs else motifs.iloc[:0]
    if not persona.empty:
        blocks.append(text("Motifs of the triggered answers the untriggered do not hold:"))
        blocks += head_table(persona.head(TOP_CANDIDATES))
    return blocks
