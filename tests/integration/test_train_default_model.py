"""SAE training and evaluation on real activations of the default model (a small, quick run)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feature_store.transcripts import Transcript
from sae_atlas.config import HarvestConfig, TrainConfig
from sae_atlas.sae import load_sae
from sae_atlas.stages.harvest import harvest
from sae_atlas.stages.train import train_saes

pytestmark = pytest.mark.integration

HOOK = "blocks.15.hook_resid_post"
TOPICS = ["the sea", "bread", "stars", "rain", "chess", "bees", "glass", "rivers", "music", "salt"]


def chats(handle) -> list[Transcript]:
    transcripts = []
    for i, topic in enumerate(TOPICS * 3):
        messages = [
            {"role": "user", "content": f"Tell me one thing about {topic}."},
            {"role": "assistant", "content": f"Here is one thing about {topic}: it is old."},
        ]
        chat = handle.format_chat(messages)
        split = "heldout" if i % 5 == 0 else "train"
        transcripts.append(Transcript(chat.token_ids, chat.roles, question_id=topic, split=split))
    return transcripts


def test_train_and_evaluate_on_the_default_model(tmp_path, smollm):
    harvest(chats(smollm), tmp_path / "a.h5", HarvestConfig(hooks=(HOOK,)), handle=smollm)
    config = TrainConfig(
        width=1152, k=16, batch_size=128, training_tokens=128 * 60, lr=1e-3, eval_transcripts=4
    )
    [result] = train_saes(tmp_path / "a.h5", tmp_path / "sae", config, handle=smollm)
    sae = load_sae(result.path)
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (576, 1152)
    evaluation = result.card["evaluation"]
    assert evaluation["activations"]["explained_variance"] <= 1
    spliced = evaluation["spliced"]
    assert spliced["ce_zero"] > spliced["ce_clean"]
    assert np.isfinite(spliced["ce_recovered_zero"]) and np.isfinite(spliced["kl_sae"])
    for role in ("system", "user", "assistant", "template"):
        assert spliced["by_role"][role]["n_predictions"] > 0
    tokens = torch.from_numpy(chats(smollm)[0].token_ids).long()[None]
    with torch.inference_mode():
        assert torch.equal(smollm.bridge(tokens), smollm.hf_model(tokens).logits)
