"""Where conversations flow in persona space: regions, transitions, attractors, drift, and the
experiments that measure them on a model.

The math (`markov`, `drift`). A rollout is a sequence of assistant turns; each turn's mean
residual activation is a point in persona space and belongs to its nearest region (a persona
cluster's centroid: `space`). From the region sequences of many rollouts: the transition matrix
between regions, its stationary distribution, and the attractors: closed sets of regions the
chain enters and does not leave, each with its basin (which starting personas end there) and
relaxation time (turns until a rollout enters the attractor for good); resampling whole rollouts
says how often each attractor set is found (`attractor_robustness`). Drift curves are a per-turn
scalar (the projection on the assistant axis) averaged per group with a 95% confidence interval,
raw and minus a baseline rollout on the same user turns and seed (`relative_to_baseline`: what
turn position alone does). These are numpy on small arrays: milliseconds (the robustness
bootstrap: about a second).

The experiments (`run_dynamics` in `stage`, the steps in `experiments`), on a built run
(atlas.h5, transcripts.h5, the SAE): (a) rollouts from many starting personas (system prompt,
then neutral questions from the question bank; the default persona's rollouts are the drift
baseline) and (b) without a system prompt after scene-setting first turns (then the same
questions), pooled into the transition matrix, stationary distribution, attractors and drift
curves (`rollouts`); (c) a steering kick (`steering`): a persona direction (persona vector minus
default vector) added at turn 0 only, against a matched random direction and no kick on the same
seeds, with the distance to the unkicked rollout per turn (the relaxation) and the persona
classifier's probability of the target persona on the kicked turn (mean paired difference to the
random kick, bootstrap 95% CI over prompts); puppeteer features zero- and mean-ablated through
the SAE, with assistant-style marker rates with and without (`markers`); (d) the wrapper scan
(`wrapper_scan`, `wrapper_firing`, `wrapper_differential`): SAE features that fire on responses
only when the user's message is wrapped (stored as dynamics/trigger_scan; label's
`trigger:<wrapper>` tags are another analysis). Turn points are measured on the text without
hooks (`turns`): a kick counts through what it made the model write. Cost: every sampled token
is one decode step of the (hooked) model, every turn re-reads its conversation, and one forward
pass to the hook measures it. The quick profile samples ~14k tokens, the full profile ~30k (on
the 2-core development machine shared with other jobs at load 7-10: 18 and 29 minutes; not yet
timed on an idle machine). Results go to the atlas's dynamics/ group (`tables`).
"""

from sae_atlas.stages.dynamics.attractors import flow_tables
from sae_atlas.stages.dynamics.checks import check_dynamics_config
from sae_atlas.stages.dynamics.drift import drift_curves, relative_to_baseline
from sae_atlas.stages.dynamics.markers import (
    MARKERS,
    marker_ablation,
    marker_hits,
    paired_rates,
)
from sae_atlas.stages.dynamics.markov import (
    lagged_counts,
    nearest_region,
    predicted_return,
    stationary_distribution,
    transition_counts,
    transition_matrix,
)
from sae_atlas.stages.dynamics.rollouts import (
    SCENES,
    ConversationPlan,
    Rollouts,
    natural_rollouts,
    question_bank,
    run_conversations,
)
from sae_atlas.stages.dynamics.space import (
    PersonaMap,
    persona_map,
    region_paths,
    starting_personas,
)
from sae_atlas.stages.dynamics.stage import (
    DYNAMICS_STEPS,
    DynamicsPaths,
    DynamicsResult,
    run_dynamics,
)
from sae_atlas.stages.dynamics.steering import (
    half_life,
    kick_relaxation,
    steering_kicks,
    steering_scores,
    steering_targets,
)
from sae_atlas.stages.dynamics.tables import (
    COLUMNS,
    DESCRIPTIONS,
    baseline_rows,
    drift_tables,
    dynamics_tables,
    stored_summary,
)
from sae_atlas.stages.dynamics.turns import TurnActivations, assistant_spans, turn_activations
from sae_atlas.stages.dynamics.wrapper_differential import (
    combined_score,
    difference_in_differences,
    differential_auroc,
    differential_statistics,
    differential_table,
    rank_differential,
)
from sae_atlas.stages.dynamics.wrapper_firing import (
    WRAPPERS,
    discovery_rows,
    firing_statistics,
    firing_table,
    heldout_auroc,
    rank_wrappers,
)
from sae_atlas.stages.dynamics.wrapper_scan import scan_wrappers, wrapper_responses

__all__ = [
    "COLUMNS",
    "DESCRIPTIONS",
    "DYNAMICS_STEPS",
    "MARKERS",
    "SCENES",
    "WRAPPERS",
    "ConversationPlan",
    "DynamicsPaths",
    "DynamicsResult",
    "PersonaMap",
    "Rollouts",
    "TurnActivations",
    "assistant_spans",
    "baseline_rows",
    "check_dynamics_config",
    "combined_score",
    "difference_in_differences",
    "differential_auroc",
    "differential_statistics",
    "differential_table",
    "discovery_rows",
    "drift_curves",
    "drift_tables",
    "dynamics_tables",
    "firing_statistics",
    "firing_table",
    "flow_tables",
    "half_life",
    "heldout_auroc",
    "kick_relaxation",
    "lagged_counts",
    "marker_ablation",
    "marker_hits",
    "natural_rollouts",
    "nearest_region",
    "paired_rates",
    "persona_map",
    "predicted_return",
    "question_bank",
    "rank_differential",
    "rank_wrappers",
    "region_paths",
    "relative_to_baseline",
    "run_conversations",
    "run_dynamics",
    "scan_wrappers",
    "starting_personas",
    "stationary_distribution",
    "steering_kicks",
    "steering_scores",
    "steering_targets",
    "stored_summary",
    "transition_counts",
    "transition_matrix",
    "turn_activations",
    "wrapper_responses",
]
