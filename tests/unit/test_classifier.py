from __future__ import annotations

import pickle

import numpy as np
import pytest

from sae_atlas.classifier import PersonaClassifier, train_classifier
from sae_atlas.errors import SaeAtlasError

VOICES = {
    "pirate": "arr matey treasure ship rum sea captain plank",
    "chef": "flavor recipe kitchen salt simmer butter oven taste",
    "doctor": "symptoms patient clinic dose rest diagnosis health",
    "poet": "moonlight verse whisper heart dream rose sorrow",
}
FILLER = [
    "the",
    "a",
    "and",
    "you",
    "I",
    "it",
    "is",
    "to",
    "of",
    "that",
    "this",
    "for",
    "with",
    "about",
    "what",
    "how",
]


def synthetic(n_per_split: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    texts, personas, splits = [], [], []
    for split in ("train", "heldout"):
        for persona, voice in VOICES.items():
            for _ in range(n_per_split):
                words = list(rng.choice(FILLER, 12)) + list(rng.choice(voice.split(), 3))
                rng.shuffle(words)
                texts.append(" ".join(words))
                personas.append(persona)
                splits.append(split)
    return texts, personas, splits


def test_separable_personas_are_found():
    texts, personas, splits = synthetic()
    classifier = train_classifier(texts, personas, splits)
    assert classifier.chance == pytest.approx(0.25)
    assert classifier.heldout_accuracy > 0.9
    assert set(classifier.per_persona.index) == set(VOICES)
    assert (classifier.per_persona.n_heldout == 30).all()
    probs = classifier.predict_proba(["arr matey, the treasure is on the ship"])
    assert list(probs.columns) == sorted(VOICES) and probs.shape == (1, 4)
    assert probs.iloc[0].idxmax() == "pirate"
    assert np.allclose(probs.sum(axis=1), 1)


def test_shuffled_labels_stay_near_chance():
    texts, personas, splits = synthetic()
    shuffled = list(np.random.default_rng(1).permutation(personas))
    classifier = train_classifier(texts, shuffled, splits)
    assert abs(classifier.heldout_accuracy - 0.25) < 0.15


def test_save_load_and_version_check(tmp_path):
    texts, personas, splits = synthetic(10)
    classifier = train_classifier(texts, personas, splits)
    path = tmp_path / "classifier.pkl"
    classifier.save(path)
    loaded = PersonaClassifier.load(path)
    assert loaded.heldout_accuracy == classifier.heldout_accuracy
    assert loaded.predict_proba(texts[:3]).equals(classifier.predict_proba(texts[:3]))
    payload = pickle.loads(path.read_bytes())
    path.write_bytes(pickle.dumps({**payload, "sklearn": "0.0"}))
    with pytest.raises(SaeAtlasError, match="retrain"):
        PersonaClassifier.load(path)
    with pytest.raises(SaeAtlasError, match="no such"):
        PersonaClassifier.load(tmp_path / "missing.pkl")


def test_bad_inputs_are_actionable():
    with pytest.raises(SaeAtlasError, match="one persona and one split"):
        train_classifier(["a", "b"], ["x"], ["train", "train"])
    with pytest.raises(SaeAtlasError, match="at least two personas"):
        train_classifier(["a b", "b c"], ["x", "x"], ["train", "heldout"])
