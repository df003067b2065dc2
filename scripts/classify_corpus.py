"""Does the model really play each persona? The text-only persona classifier on a corpus.

Trains the TF-IDF + logistic-regression persona classifier (sae_atlas.classifier) on the
responses to training questions of a corpus store and scores it on held-out questions. The
default persona's conditions (default, no_system) count as one class, "assistant". Prints the
held-out accuracy against chance and the personas the model fails to play (lowest held-out
accuracy), writes JSON and saves the classifier next to the corpus.

    python scripts/classify_corpus.py runs/quick/transcripts.h5 --out runs/quick/classifier.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sae_atlas.classifier import train_classifier
from sae_atlas.model import load_model
from sae_atlas.stages.corpus import corpus_responses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worst", type=int, default=10)
    args = parser.parse_args()
    out = args.out or args.corpus.with_name("classifier.json")
    handle = load_model()
    responses = corpus_responses(args.corpus, handle)
    personas = responses["persona"].where(responses["condition"] == "persona", "assistant")
    started = time.monotonic()
    classifier = train_classifier(
        responses["text"].tolist(), personas.tolist(), responses["split"].tolist()
    )
    seconds = time.monotonic() - started
    table = classifier.per_persona.sort_values("heldout_accuracy")
    print(f"{len(responses)} responses, {personas.nunique()} personas, fit {seconds:.1f} s")
    print(
        f"held-out accuracy {classifier.heldout_accuracy:.3f}, chance {classifier.chance:.3f} "
        f"(uniform {1 / personas.nunique():.3f})"
    )
    print(f"personas played worst (held-out accuracy):\n{table.head(args.worst).to_string()}")
    classifier.save(out.with_suffix(".pkl"))
    out.write_text(
        json.dumps(
            {
                "n_responses": len(responses),
                "n_personas": int(personas.nunique()),
                "heldout_accuracy": classifier.heldout_accuracy,
                "chance_majority": classifier.chance,
                "chance_uniform": 1 / personas.nunique(),
                "fit_seconds": seconds,
                "per_persona": table.reset_index().to_dict(orient="records"),
            },
            indent=2,
            default=float,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
