"""The only code that knows the model's internals: one chat model, loaded, formatted, run.

handle (ModelHandle, chat formatting with a role per token, hook names), loading (load_model,
the default GGUF, peft adapters, dtypes), sampling (the seeded KV-cache sampler), conversation
(multi-turn `converse`), forward (residual activations, batching, the final norm and decoder
blocks of a Hugging Face model) and steering (add / ablate / cap interventions, matched random
controls).
"""

from sae_atlas.model.conversation import USER_INSTRUCTION, converse, swap_roles
from sae_atlas.model.dtype import DTYPES, DtypeChoice, resolve_dtype
from sae_atlas.model.forward import (
    batch_activations,
    decoder_layers,
    final_norm_weight,
    length_batches,
    padded,
    residual_activations,
)
from sae_atlas.model.handle import (
    ChatTokens,
    Message,
    Messages,
    ModelHandle,
    hook_layer,
    message,
    resid_hook,
)
from sae_atlas.model.loading import (
    DEFAULT_MODEL,
    adapted_model_id,
    handle_from_hf,
    load_model,
)
from sae_atlas.model.sampling import (
    Response,
    SamplerSettings,
    check_sampling,
    decode,
    job_seed,
    new_tokens_text,
    prompt_ids,
    sample,
    sampling_model,
    stop_token_ids,
)
from sae_atlas.model.steering import (
    Intervention,
    ablate_features,
    add_direction,
    cap_projection,
    intervene,
    matched_random,
    steered,
)

__all__ = [
    "DEFAULT_MODEL",
    "DTYPES",
    "USER_INSTRUCTION",
    "ChatTokens",
    "DtypeChoice",
    "Intervention",
    "Message",
    "Messages",
    "ModelHandle",
    "Response",
    "SamplerSettings",
    "ablate_features",
    "adapted_model_id",
    "add_direction",
    "batch_activations",
    "cap_projection",
    "check_sampling",
    "converse",
    "decode",
    "decoder_layers",
    "final_norm_weight",
    "handle_from_hf",
    "hook_layer",
    "intervene",
    "job_seed",
    "length_batches",
    "load_model",
    "matched_random",
    "message",
    "new_tokens_text",
    "padded",
    "prompt_ids",
    "resid_hook",
    "residual_activations",
    "resolve_dtype",
    "sample",
    "sampling_model",
    "steered",
    "stop_token_ids",
    "swap_roles",
]
