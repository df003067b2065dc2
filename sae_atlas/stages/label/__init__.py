"""Label SAE features: contrastive per-persona statistics, tags, feature cards, persona vectors.

One streamed SAE pass over an activation store (`statistics.collect`, fed by the accumulators of
`accumulate`) gives, without ever holding [n_tokens, d_sae]: per sampled response the mean
activation of every feature over its tokens and over the assistant header before it; per
transcript of a conditional persona, with and without its wrapper, the maximum on the user's
message; per persona and split token counts, activation sums, firing counts, sums of response
maxima and the mean raw residual (the persona vector); the same on the assistant header and on
the control conditions (the response text in a user turn and outside the template); per feature
its top activations and a uniform sample of firing tokens. From these the package contrasts
every persona against the default persona on the same questions (`contrasts`), tags features
(`persona:<name>`, `roleplay`, `assistant`, `puppeteer`, `trigger:<wrapper>`), finds template
features (`puppeteer`), decodes personas from SAE profiles (`decoding`), builds a card per
feature (`cards`), repeats the contrasts on shuffled persona labels (`summary`), and returns
`Labels` (feature_store.labels; `labeling.label`); `label_stage` writes it to labels.h5 and
skips when that file is complete for the same inputs and config (`stage`).

Modules: inputs (what the pass reads and its identity), rows (what each transcript and row
counts for), accumulate (the streamed pass), statistics (what the pass computes), contrasts,
puppeteer, findings (the pass, contrasts and tags together), decoding, cards, summary, labeling
(`label`), stage (`label_stage`).
"""

from sae_atlas.stages.base import open_store
from sae_atlas.stages.label.contrasts import (
    Contrast,
    best_features,
    contrast,
    contrast_tags,
    paired_rows,
)
from sae_atlas.stages.label.decoding import (
    DECODERS,
    cross_fitted,
    fit_decoder,
    persona_decoder,
    question_folds,
)
from sae_atlas.stages.label.inputs import (
    HELDOUT,
    TRAIN,
    Responses,
    TriggerSet,
    catalogue_from_corpus,
    find_responses,
    find_triggers,
    label_identity,
)
from sae_atlas.stages.label.labeling import label
from sae_atlas.stages.label.stage import LabelResult, label_stage
from sae_atlas.stages.label.statistics import (
    FIRST_TOKENS,
    FeatureStatistics,
    collect,
    persona_statistics,
    response_statistics,
)

__all__ = [
    "DECODERS",
    "FIRST_TOKENS",
    "HELDOUT",
    "TRAIN",
    "Contrast",
    "FeatureStatistics",
    "LabelResult",
    "Responses",
    "TriggerSet",
    "best_features",
    "catalogue_from_corpus",
    "collect",
    "contrast",
    "contrast_tags",
    "cross_fitted",
    "find_responses",
    "find_triggers",
    "fit_decoder",
    "label",
    "label_identity",
    "label_stage",
    "open_store",
    "paired_rows",
    "persona_decoder",
    "persona_statistics",
    "question_folds",
    "response_statistics",
]
