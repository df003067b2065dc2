"""Label an SAE's features on personas of the external Assistant Axis catalogue.

Imports the first --roles roles of `safety-research/assistant-axis` (the default role included;
or the roles named with --role), samples their corpus with the default model (persona, default
and no_system responses plus the user / plain controls), harvests the residual stream at the
SAE's hook, and runs the labeling pass (`sae_atlas.stages.label`) with the SAE of --sae (one trained
on the default model's quick run at that hook). Prints, per role, its best feature (chosen on train
questions) with its held-out AUROC against the default assistant, then the headline figures: the
share of roles with a feature at held-out AUROC >= 0.9, decoding accuracy against chance, counts
per tag, the shuffled-label control, puppeteer and template features. Writes the stage outputs
to --out-dir and the figures to --out-dir/label_assistant_axis.json. Every stage is skipped when
its output exists for the same inputs, so a rerun only reprints.

Size: one role costs 2 x n_questions x variants sampled responses (16 at the defaults) plus
their harvest (about 250 tokens each with the controls) and labeling. The script prints the
measured seconds per sampled response (corpus + harvest + label, fixed costs included, so small
runs overestimate it) and `roles_in_20_minutes`, the --roles that fits a 20-minute budget at the
same settings; run a small size first, then that many.

    .venv/bin/python scripts/label_assistant_axis.py --roles 40 --out-dir runs/assistant_axis \\
        --sae runs/quick/sae/blocks.15.hook_resid_post
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from feature_store.labels import load_labels
from feature_store.transcripts import TranscriptStore
from sae_atlas.config import CorpusConfig, HarvestConfig, LabelConfig, to_dict
from sae_atlas.model import load_model
from sae_atlas.model.dtype import DTYPE_NAMES
from sae_atlas.personas import import_assistant_axis
from sae_atlas.sae import load_sae
from sae_atlas.stages.corpus import build_corpus
from sae_atlas.stages.harvest import harvest
from sae_atlas.stages.label import label_stage

# The benchmark folder beside the repository (../shared/benchmarks), unless --root says otherwise.
ROOT = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "assistant-axis"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Corpus, harvest and label into args.out_dir; the figures as a JSON-ready dict."""
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    sae = load_sae(args.sae)
    hook = str(sae.cfg.metadata.hook_name)
    catalogue = import_assistant_axis(args.root, roles=args.role or None, max_roles=args.roles)
    handle = load_model(args.model, device=args.device, dtype=args.dtype)
    corpus_config = CorpusConfig(
        catalogue=f"assistant-axis:{args.root}",
        n_questions=args.n_questions,
        variants=args.variants,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        dtype=args.dtype,
    )
    seconds: dict[str, float] = {}
    started = time.monotonic()
    corpus = build_corpus(catalogue, out / "transcripts.h5", corpus_config, handle=handle)
    seconds["corpus"] = time.monotonic() - started
    started = time.monotonic()
    transcripts = TranscriptStore(out / "transcripts.h5")
    harvested = harvest(
        transcripts, out / "activations.h5", HarvestConfig(hooks=(hook,)), handle=handle
    )
    seconds["harvest"] = time.monotonic() - started
    started = time.monotonic()
    label_config = LabelConfig(seed=args.seed)
    result = label_stage(
        out / "activations.h5", args.sae, out / "labels.h5", label_config, handle, catalogue
    )
    seconds["label"] = time.monotonic() - started
    labels = load_labels(result.path)
    n_roles = len(labels.personas) - 1
    measured = not (corpus.skipped or harvested.skipped or result.skipped)
    seconds_per_job = sum(seconds.values()) / corpus.n_jobs if measured else None
    jobs_per_role = 2 * args.n_questions * args.variants
    return {
        "roles": [name for name in labels.personas["name"] if name != labels.default_persona],
        "n_roles": n_roles,
        "sae": str(args.sae),
        "hook": hook,
        "corpus": {**to_dict(corpus_config), "n_jobs": corpus.n_jobs, "skipped": corpus.skipped},
        "n_tokens": harvested.n_tokens,
        "seconds": seconds,
        "seconds_per_job": seconds_per_job,
        "roles_in_20_minutes": (
            int(1200 / (jobs_per_role * seconds_per_job)) if seconds_per_job else None
        ),
        "summary": labels.summary,
    }


def report(figures: dict[str, Any]) -> None:
    summary = figures["summary"]
    print(f"| {'role':<24} | feature | train AUROC | held-out AUROC | label")
    print(f"|{'-' * 26}|---------|-------------|----------------|------")
    for role, best in summary["best_heldout_auroc"].items():
        print(
            f"| {role:<24} | {best['feature']:>7} | {best['train_auroc']:>11.3f} | "
            f"{best['heldout_auroc']:>14.3f} | {best['label']}"
        )
    decoder = summary["decoder"]
    print()
    print(f"roles: {figures['n_roles']} (+ default), tokens: {figures['n_tokens']:,}")
    share = summary["share_personas_auroc_0.9"]
    print(f"share of roles with a feature at held-out AUROC >= 0.9: {share}")
    print(
        f"decoding accuracy on SAE profiles ({decoder.get('decoder')}, each held-out half scored "
        f"by the candidate best on the other): {decoder['accuracy']} (chance {decoder['chance']}, "
        f"uniform {decoder.get('uniform_chance')}; each candidate: {decoder.get('candidates')})"
    )
    print(f"tags: {summary['tag_counts']}")
    tests = summary["tests"]
    print(
        f"tests: {tests['n_tested']} made, {tests['n_significant']} hold at FDR {tests['fdr']} "
        f"({tests['n_raw_p_below_fdr']} with raw p <= {tests['fdr']})"
    )
    print(f"shuffled-label control: {summary['shuffled_control']}")
    print(f"puppeteer: {[(f['id'], f['label']) for f in summary['puppeteer_features']]}")
    template = summary["template_features"]["features"]
    print(f"template features: {[(f['id'], f['label']) for f in template[:10]]}")
    print(f"seconds: {figures['seconds']}")
    if figures["seconds_per_job"] is None:
        print("a stage was skipped: run into an empty --out-dir to measure the cost per role")
    else:
        print(
            f"at {figures['seconds_per_job']:.2f} s per sampled response, 20 minutes hold about "
            f"{figures['roles_in_20_minutes']} roles at these settings"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sae", type=Path, required=True, help="SAE folder (sae-lens format)")
    parser.add_argument(
        "--root", type=Path, default=ROOT, help=f"assistant-axis repository root (default: {ROOT})"
    )
    parser.add_argument("--roles", type=int, default=40, help="roles to import, default included")
    parser.add_argument("--role", action="append", help="import these roles (repeatable)")
    parser.add_argument("--n-questions", type=int, default=4, help="questions per split")
    parser.add_argument("--variants", type=int, default=2, help="system prompts per role")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype", default="auto", choices=DTYPE_NAMES, help="auto: bfloat16 where measured fast"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path("runs/assistant_axis"))
    args = parser.parse_args()
    figures = run(args)
    report(figures)
    path = args.out_dir / "label_assistant_axis.json"
    path.write_text(json.dumps(figures, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
