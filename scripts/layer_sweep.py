"""Layer sweep: the same SAE budget at several layers of the default model, to choose a layer.

One corpus, one harvest pass recording every layer, then one SAE per layer with the same
architecture, width and token budget. Per layer: SAE quality on held-out tokens (explained
variance, L0, dead fraction, CE-loss recovered against zero ablation) and a first
persona-separability figure: nearest-centroid persona decoding on held-out responses from the
mean residual of each response (cosine to per-persona centroids of training responses), against
chance. Prints a table and writes JSON.

    python scripts/layer_sweep.py --layers 6 10 15 20 --out runs/sweep
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from feature_store.activations import ActivationStore
from feature_store.schema import ROLE_CODE
from sae_atlas.build import build
from sae_atlas.config import load_config
from sae_atlas.model import resid_hook


def response_means(store: ActivationStore, hook: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean residual over assistant tokens per persona-condition response: [n, d_model],
    with each response's persona and split."""
    provenance = store.provenance()
    roles = store.token_table()["role"]
    acts = store.acts(hook).astype(np.float32)
    keep = provenance["condition"].isin(["persona", "default", "no_system"]).to_numpy()
    means, personas, splits = [], [], []
    for row in provenance[keep].itertuples():
        span = slice(int(row.token_start), int(row.token_start) + int(row.token_count))
        assistant = roles[span] == ROLE_CODE["assistant"]
        if assistant.any():
            means.append(acts[span][assistant].mean(0))
            persona = "default" if row.condition != "persona" else row.persona
            personas.append(persona)
            splits.append(row.split)
    return np.stack(means), np.asarray(personas), np.asarray(splits)


def centroid_accuracy(
    vectors: np.ndarray, labels: np.ndarray, splits: np.ndarray
) -> tuple[float, float]:
    """Held-out accuracy of nearest-centroid (cosine) decoding, and chance (1 / n classes)."""
    centered = vectors - vectors[splits == "train"].mean(0)
    unit = centered / np.linalg.norm(centered, axis=1, keepdims=True)
    names = np.unique(labels[splits == "train"])
    centroids = np.stack([unit[(labels == n) & (splits == "train")].mean(0) for n in names])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    test = splits == "heldout"
    predicted = names[(unit[test] @ centroids.T).argmax(1)]
    return float((predicted == labels[test]).mean()), 1.0 / len(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 10, 15, 20, 25])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--tokens", type=int, default=300_000, help="SAE budget per layer")
    parser.add_argument("--n-questions", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    args = parser.parse_args()
    config = load_config(args.profile)
    hooks = tuple(resid_hook(layer) for layer in args.layers)
    config = dataclasses.replace(
        config,
        corpus=dataclasses.replace(config.corpus, n_questions=args.n_questions),
        harvest=dataclasses.replace(config.harvest, hooks=hooks),
        train=dataclasses.replace(config.train, hooks=hooks, training_tokens=args.tokens),
    )
    records = build(config, args.out)
    store = ActivationStore(args.out / "activations.h5")
    rows = []
    for layer, hook in zip(args.layers, hooks, strict=True):
        card = json.loads((args.out / "sae" / hook / "training_card.json").read_text())
        evaluation = card.get("evaluation") or {}
        activations = evaluation.get("activations") or {}
        spliced = evaluation.get("spliced") or {}
        accuracy, chance = centroid_accuracy(*response_means(store, hook))
        rows.append(
            {
                "layer": layer,
                "explained_variance": activations.get("explained_variance"),
                "l0": activations.get("l0"),
                "dead_fraction": activations.get("dead_fraction"),
                "ce_recovered_zero": spliced.get("ce_recovered_zero"),
                "persona_decoding": accuracy,
                "chance": chance,
            }
        )
    print(f"{'layer':>5} {'EV':>6} {'L0':>6} {'dead':>6} {'CE rec':>7} {'decode':>7} {'chance':>7}")
    for r in rows:
        cells = [r["explained_variance"], r["l0"], r["dead_fraction"], r["ce_recovered_zero"]]
        text = " ".join(f"{c:6.3f}" if isinstance(c, float) else f"{'-':>6}" for c in cells)
        print(f"{r['layer']:5d} {text} {r['persona_decoding']:7.3f} {r['chance']:7.3f}")
    result = {
        "rows": rows,
        "stages": [dataclasses.asdict(r) for r in records],
        "tokens_per_sae": args.tokens,
    }
    (args.out / "layer_sweep.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'layer_sweep.json'}")


if __name__ == "__main__":
    main()
