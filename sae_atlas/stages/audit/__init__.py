"""The planted-persona audit: find a trigger-gated persona, its trigger and who it is, from a
tuned model (and its base) alone, with no list of triggers.

diffing (the two models side by side, no sampling), vocab_scan (the whole vocabulary
group-tested in a shape), leakage (template-only generations and motifs), candidates (words the
fine-tune reads, a generated family of shapes, nulls), scoring (KL at the first response token
against nulls of the same kind), growth (the best candidates grown by a word or a word piece),
verification (sampled answers, AUROC with intervals, Benjamini-Hochberg), stage
(`run_audit`, `audit_section`) and record (what an atlas's experiments/audit holds).
"""

from sae_atlas.stages.audit.diffing import ModelPair, load_pair, pair_from_models
from sae_atlas.stages.audit.record import (
    AUDIT_COLUMNS,
    AUDIT_DESCRIPTIONS,
    AUDIT_UNITS,
    audit_summary,
    audit_tables,
    record_audit,
)
from sae_atlas.stages.audit.stage import (
    AUDIT_STEPS,
    AuditConfig,
    AuditResult,
    audit_record,
    audit_section,
    run_audit,
)

__all__ = [
    "AUDIT_COLUMNS",
    "AUDIT_DESCRIPTIONS",
    "AUDIT_STEPS",
    "AUDIT_UNITS",
    "AuditConfig",
    "AuditResult",
    "ModelPair",
    "audit_record",
    "audit_section",
    "audit_summary",
    "audit_tables",
    "load_pair",
    "pair_from_models",
    "record_audit",
    "run_audit",
]
