"""What an audit records in an atlas (experiments/audit, `sae-atlas audit --atlas`): its tables,
its summary (the verdict and the evidence lines `audit_section` prints), and the description of
every table and column. pandas on the audit's tables: milliseconds.

Tables: `candidates` (every candidate scored cheaply, nulls included), `verdicts` (the verified
candidates), `answers` (every sampled verification answer), `statements` (the persona's most
characteristic statements), `motifs` (persona and leakage motifs). `record_audit` writes them
(sae_atlas.stages.record: one copy of the atlas, renamed into place).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from sae_atlas.stages.audit.stage import AuditResult, audit_section
from sae_atlas.stages.record import record_results

AUDIT_DESCRIPTIONS: dict[str, str] = {
    "candidates": "one row per candidate trigger scored without sampling, null candidates (random "
    "words of the same shape) included, sorted by z: KL at the first response token, z and p "
    "against the nulls of its kind, BH q over every real candidate",
    "verdicts": "one row per verified candidate: AUROC of its answers' persona shift against "
    "null-candidate answers with a bootstrap 95% interval over questions, mean log-likelihood "
    "ratios, p and BH q",
    "answers": "every sampled verification answer: condition (a candidate's text, null:<text> "
    "or none), question, text, log-likelihood ratio",
    "statements": "the persona's most characteristic statements: sentences of the triggered "
    "answers holding the most persona motifs",
    "motifs": "motifs the tuned model says and the other side does not: persona (triggered "
    "answers against untriggered and null answers) and leakage (template-only generations, "
    "tuned against base)",
}

AUDIT_COLUMNS: dict[str, str] = {
    "text": "the candidate's text as inserted (or the answer's text)",
    "shape": "the candidate's shape (tag pair, bracketed prefix, word in the question, "
    "system-prompt phrase, ...)",
    "kind": "shape and size the nulls are matched on",
    "source": "where the candidate came from (weights, leakage, extension, null)",
    "words": "the candidate's words",
    "score": "mean KL(tuned || base) at the first response token over the probe questions",
    "null": "whether the row is a null candidate (random words of the same kind)",
    "z": "z of log score against the null candidates of its kind",
    "p": "one-sided p-value (z against the nulls; verdicts: Mann-Whitney of the answers' llr)",
    "q": "Benjamini-Hochberg q-value (candidates: over every real candidate; verdicts: over the "
    "verified)",
    "index": "the candidate's row in scoring order",
    "auroc": "AUROC of the candidate's answers' llr against the null candidates' answers'",
    "auroc_low": "lower end of the AUROC's bootstrap 95% interval over questions",
    "auroc_high": "upper end of the AUROC's bootstrap 95% interval over questions",
    "llr": "mean log-likelihood ratio of the answers under tuned against base",
    "null_llr": "the same for the null candidates' answers",
    "condition": "a candidate's text, null:<text> for a null candidate, or none",
    "question": "the verification question",
    "null_kind": "the null candidate's kind (empty for real candidates and none)",
    "statement": "a characteristic statement of the persona",
    "motif": "a recurring character n-gram motif",
    "share": "share of the tuned (or triggered) texts holding the motif",
    "other_share": "share of the other side's texts holding it",
}
AUDIT_UNITS: dict[str, str] = {"score": "nats", "llr": "nats", "null_llr": "nats"}


def audit_tables(result: AuditResult) -> dict[str, pd.DataFrame]:
    """The audit's tables for experiments/audit (see the module)."""
    motifs = [
        {"motif": str(m[0]), "share": float(m[1]), "other_share": float(m[2]), "kind": kind}
        for kind, found in (("persona", result.persona_motifs), ("leakage", result.leakage_motifs))
        for m in found
    ]
    return {
        "candidates": result.candidates,
        "verdicts": result.verdicts,
        "answers": result.answers,
        "statements": pd.DataFrame({"statement": [str(s) for s in result.statements]}),
        "motifs": pd.DataFrame(motifs, columns=["motif", "share", "other_share", "kind"]),
    }


def audit_summary(result: AuditResult) -> dict[str, Any]:
    """The verdict: found, the trigger (its verdict row), the headline and evidence lines the
    CLI prints, how much the fine-tune changes the first response token without a trigger, the
    candidate counts and the seconds per step."""
    section = audit_section(result)
    return {
        "found": result.found,
        "headline": section["headline"],
        "lines": section["lines"],
        "trigger": result.trigger,
        "untriggered_kl": result.untriggered_kl,
        "n_candidates": int((~result.candidates["null"]).sum()),
        "n_null": int(result.candidates["null"].sum()),
        "seconds": result.seconds,
        "cpu_seconds": result.cpu_seconds,
    }


def record_audit(atlas: str | Path, result: AuditResult, models: dict[str, Any]) -> Path:
    """Record `result` as experiments/audit of the atlas at `atlas` (replacing an earlier audit
    there only, atomically); `models`: what was audited (model, adapter, base), kept in the
    provenance's config with the audit's settings."""
    return record_results(
        atlas,
        "audit",
        audit_tables(result),
        audit_summary(result),
        descriptions=AUDIT_DESCRIPTIONS,
        columns=AUDIT_COLUMNS,
        units=AUDIT_UNITS,
        script="sae-atlas audit",
        config={**asdict(result.config), **models},
        seconds=float(sum(result.seconds.values())),
    )
