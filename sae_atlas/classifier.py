"""A persona classifier on response text: which persona wrote this?

`train_classifier(texts, personas, splits)` fits TF-IDF word (1-2) and character (3-5, within
word boundaries) n-grams into a multinomial logistic regression on the `train` rows and scores it
on the `heldout` rows (questions never seen in training). It returns a `PersonaClassifier` with
`predict_proba(texts) -> DataFrame [n_texts, n_personas]`, `heldout_accuracy`, `chance` (the
held-out accuracy of always answering the most frequent training persona) and `per_persona`
(held-out accuracy per persona: the personas the model fails to play). It is the behavioural
check that needs no outside model: it scores steering and drift by the corpus's own voices.
Cost: a few seconds for a few thousand responses; ~10k responses of ~64 tokens over ~116
personas take 15-30 s on a 2-core CPU (lbfgs over [n_personas, 100k] weights; every iteration is
two sparse products of the feature matrix with n_personas columns).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from sae_atlas.errors import SaeAtlasError

FORMAT = "sae-atlas/persona-classifier"
FORMAT_VERSION = 1
MAX_FEATURES = 50_000


@dataclass
class PersonaClassifier:
    """A fitted text -> persona model and its held-out scores.

    per_persona: one row per persona: n_train, n_heldout, heldout_accuracy (NaN without
    held-out rows).
    """

    pipeline: Pipeline
    heldout_accuracy: float
    chance: float
    per_persona: pd.DataFrame

    @property
    def personas(self) -> list[str]:
        return [str(name) for name in self.pipeline.classes_]

    def predict_proba(self, texts: Sequence[str]) -> pd.DataFrame:
        """Probabilities [n_texts, n_personas], one column per persona."""
        return pd.DataFrame(self.pipeline.predict_proba(list(texts)), columns=self.personas)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """The most likely persona of each text, [n_texts] object."""
        return np.asarray(self.pipeline.predict(list(texts)), dtype=object)

    def save(self, path: str | Path) -> None:
        """Pickle with the format version and the scikit-learn version that fitted it."""
        payload = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "sklearn": sklearn.__version__,
            "classifier": self,
        }
        Path(path).write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))

    @classmethod
    def load(cls, path: str | Path) -> PersonaClassifier:
        """Read a classifier written by `save`; SaeAtlasError if its versions do not match."""
        path = Path(path)
        if not path.is_file():
            raise SaeAtlasError(f"{path}: no such classifier file")
        try:
            payload = pickle.loads(path.read_bytes())
        except Exception as error:
            raise SaeAtlasError(
                f"{path}: not a readable classifier ({type(error).__name__}); retrain it"
            ) from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise SaeAtlasError(f"{path}: is not a {FORMAT} file; point to the right file")
        if payload["version"] != FORMAT_VERSION or payload["sklearn"] != sklearn.__version__:
            raise SaeAtlasError(
                f"{path}: written by format {payload['version']} / scikit-learn "
                f"{payload['sklearn']}, this is format {FORMAT_VERSION} / scikit-learn "
                f"{sklearn.__version__}; retrain it with train_classifier"
            )
        return payload["classifier"]


def _pipeline(seed: int) -> Pipeline:
    features = FeatureUnion(
        [
            (
                "words",
                TfidfVectorizer(
                    ngram_range=(1, 2),
                    min_df=2,
                    sublinear_tf=True,
                    max_features=MAX_FEATURES,
                    dtype=np.float32,
                ),
            ),
            (
                "chars",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(3, 5),
                    min_df=2,
                    sublinear_tf=True,
                    max_features=MAX_FEATURES,
                    dtype=np.float32,
                ),
            ),
        ]
    )
    return Pipeline(
        [
            ("features", features),
            ("model", LogisticRegression(C=10.0, max_iter=200, random_state=seed)),
        ]
    )


def train_classifier(
    texts: Sequence[str],
    personas: Sequence[str],
    splits: Sequence[str],
    seed: int = 0,
) -> PersonaClassifier:
    """Fit on rows whose split is "train", score on rows whose split is "heldout".

    texts, personas, splits: [n] each. Needs at least two personas among the train rows.
    """
    if not len(texts) == len(personas) == len(splits):
        raise SaeAtlasError(
            f"train_classifier: {len(texts)} texts, {len(personas)} personas and {len(splits)} "
            "splits; pass one persona and one split per text"
        )
    frame = pd.DataFrame({"text": list(texts), "persona": list(personas), "split": list(splits)})
    train = frame[frame.split == "train"]
    heldout = frame[frame.split == "heldout"]
    if train.persona.nunique() < 2:
        raise SaeAtlasError(
            f"train_classifier: {train.persona.nunique()} persona(s) among {len(train)} train "
            "rows; a classifier needs at least two personas with split 'train'"
        )
    pipeline = _pipeline(seed).fit(train.text.tolist(), train.persona.tolist())
    counts = frame.groupby(["persona", "split"]).size().unstack(fill_value=0)
    per_persona = pd.DataFrame(
        {
            "n_train": counts.get("train", 0),
            "n_heldout": counts.get("heldout", 0),
        }
    ).rename_axis("persona")
    per_persona["heldout_accuracy"] = np.nan
    accuracy = chance = float("nan")
    if len(heldout):
        correct = pipeline.predict(heldout.text.tolist()) == heldout.persona.to_numpy()
        accuracy = float(correct.mean())
        by_persona = pd.Series(correct, index=heldout.persona.to_numpy()).groupby(level=0).mean()
        per_persona.loc[by_persona.index, "heldout_accuracy"] = by_persona
        majority = train.persona.value_counts().idxmax()
        chance = float((heldout.persona == majority).mean())
    return PersonaClassifier(
        pipeline=pipeline,
        heldout_accuracy=accuracy,
        chance=chance,
        per_persona=per_persona.sort_values("heldout_accuracy"),
    )
