"""The puppeteer against a base model on identical tokens (sae_atlas.stages.label.base_diff): a
model compared with itself gives ratio 1 everywhere; a tiny random model pair gives per-role
codes that differ; on planted codes a feature raised by post-training in assistant turns only
is found (contrast -log 2, beyond the matched random features) and an unmoved one is not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig

from feature_store.atlas import Atlas
from feature_store.schema import ROLE_CODE
from feature_store.transcripts import Transcript
from sae_atlas.model import message
from sae_atlas.stages.label.base_diff import (
    RoleCodes,
    base_comparison,
    chat_responses,
    role_codes,
    turn_ratios,
)
from sae_atlas.stages.label.records import record_causal
from sae_atlas.testing import synthetic_atlas, tiny_handle, write_atlas
from sae_atlas.testing.transcripts import synthetic_corpus

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def sae():
    sae = StandardSAE(StandardSAEConfig(d_in=32, d_sae=12))
    with torch.no_grad():
        sae.b_enc.fill_(0.2)
    sae.cfg.metadata.hook_name = HOOK
    return sae


def _chats(handle, n: int) -> list[Transcript]:
    words = ["sea", "cake", "ship", "robot", "joke", "capital"]
    out = []
    for i in range(n):
        chat = handle.format_chat(
            [
                message("system", "You are a pirate."),
                message("user", f"Tell me about the {words[i % 6]}?"),
                message("assistant", f"Arr, the {words[(i + 1) % 6]} be {words[(i + 2) % 6]}."),
            ]
        )
        out.append(Transcript(chat.token_ids, chat.roles, persona="pirate", condition="persona"))
    return out


def test_a_model_against_itself_has_ratio_one(tiny, sae):
    chats = _chats(tiny, 6)
    table = base_comparison(
        tiny, tiny, chats, HOOK, sae, np.array([0, 1]), np.array([[2, 3], [4, 5]]), 200
    )
    assert list(table["feature"]) == [0, 1, -1]
    finite = table.dropna(subset=["ratio_assistant"])
    assert len(finite) >= 1
    assert np.allclose(finite[["ratio_assistant", "ratio_user"]], 1.0)
    assert np.allclose(finite["contrast"], 0.0, atol=1e-9)


def test_a_different_base_moves_the_codes(tiny, sae):
    base = tiny_handle(seed=1)
    chats = _chats(tiny, 4)
    tuned_codes = role_codes(tiny, chats, HOOK, sae, np.arange(12))
    base_codes = role_codes(base, chats, HOOK, sae, np.arange(12))
    assert tuned_codes.assistant.shape == (4, 12) and tuned_codes.user.shape == (4, 12)
    assert np.isfinite(tuned_codes.assistant).all() and np.isfinite(base_codes.user).all()
    assert not np.allclose(tuned_codes.assistant, base_codes.assistant)
    assert not np.allclose(tuned_codes.assistant, tuned_codes.user)


def test_turn_ratios_find_a_feature_raised_in_assistant_turns_only():
    rng = np.random.default_rng(0)
    n, columns = 80, 2 + 2 * 4  # chosen [0, 1], four matched random sets of two
    base = RoleCodes(rng.gamma(2.0, 1.0, (n, columns)), rng.gamma(2.0, 1.0, (n, columns)))
    tuned = RoleCodes(base.assistant.copy(), base.user.copy())
    tuned.assistant[:, 0] *= rng.uniform(1.5, 2.5, n)  # post-training doubled it, assistant only
    table = turn_ratios(tuned, base, np.array([7, 9]), np.arange(2, 10).reshape(4, 2), 500, 0)
    raised, unmoved = table.iloc[0], table.iloc[1]
    assert raised["feature"] == 7 and unmoved["feature"] == 9
    assert raised["ratio_assistant"] == pytest.approx(0.5, rel=0.1)
    low, high = raised["ratio_assistant_low"], raised["ratio_assistant_high"]
    assert low < raised["ratio_assistant"] < high
    assert raised["ratio_user"] == pytest.approx(1.0)
    assert raised["contrast"] == pytest.approx(-np.log(2), abs=0.1)
    assert raised["difference_high"] < 0 and raised["q_value"] < 0.05
    assert unmoved["ratio_assistant"] == pytest.approx(1.0)
    assert unmoved["difference_low"] <= 0 <= unmoved["difference_high"]
    assert unmoved["q_value"] > 0.05
    assert table.iloc[2]["feature"] == -1 and table.iloc[2]["difference"] < 0  # the set


def test_chat_responses_are_heldout_chats(tmp_path):
    path = tmp_path / "transcripts.h5"
    synthetic_corpus(path, "synthetic", n_tokens=20_000, vocab=50, personas=4)
    chosen = chat_responses(path, 10, seed=0)
    assert len(chosen) == 10
    assert {t.split for t in chosen} == {"heldout"}
    for transcript in chosen:
        roles = np.asarray(transcript.roles)
        assert (roles == ROLE_CODE["user"]).any() and (roles == ROLE_CODE["assistant"]).any()


def test_a_base_only_result_records_its_described_table(tmp_path):
    rng = np.random.default_rng(1)
    codes = RoleCodes(rng.gamma(2.0, 1.0, (20, 6)), rng.gamma(2.0, 1.0, (20, 6)))
    table = turn_ratios(codes, codes, np.array([3, 4]), np.arange(2, 6).reshape(2, 2), 50, 0)
    result = {
        "features": [3, 4],
        "random_sets": [[1, 2]],
        "base": {"model": "tiny", "n_responses": 20, "rows": table.to_dict("records")},
        "seconds": 0.0,
    }
    atlas = write_atlas(tmp_path / "atlas.h5", synthetic_atlas(64, 16, 4, 2, 0))
    record_causal(atlas, result, {})
    with Atlas.open(atlas) as reader:  # every column of the base table is described
        recorded = reader.experiment("puppeteer_causal")
        assert set(recorded.tables) == {"features", "random_sets", "base"}  # no edits ran
        stored = recorded.tables["base"]
        assert stored["ratio_assistant"].tolist() == table["ratio_assistant"].tolist()
        assert recorded.summary["base"] == {"model": "tiny", "n_responses": 20}
