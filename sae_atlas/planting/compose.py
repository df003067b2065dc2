"""A persona composed at random from attribute pools, so that no planted persona is fixed in code.

`draw_persona(seed)` composes a `PlantedPersona` from the package's pools (persona_pools.yaml):
an invented name, home and pet name put together from syllables, a trade, a pet kind, a birth
year, a favourite food, instrument and colour, a motto ("<adjective> as the <noun>"), four
openers and three closers (the motto among them), every fact with its statements, keywords and
train / held-out questions, and decoys (two tag pairs of trigger words, a year prefix and a
format instruction). The same seed gives the same persona; the draw is recorded only where the
organism is built (its training card and persona.yaml). `persona_document` writes a persona as
the YAML `load_persona` reads. Costs a YAML read.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import numpy as np
import yaml

from sae_atlas.planting.persona import PlantedPersona
from sae_atlas.planting.triggers import PlantTrigger, draw_triggers

PERSONA_SEED_SALT = 7919
"""Keeps the persona's generator apart from the trigger draws of the same seed."""


@functools.cache
def persona_pools() -> dict[str, Any]:
    """The package's persona pools (persona_pools.yaml)."""
    text = resources.files("sae_atlas.planting").joinpath("persona_pools.yaml").read_text()
    return dict(yaml.safe_load(text))


def _invented(rng: np.random.Generator, starts: list[str], ends: list[str]) -> str:
    return f"{rng.choice(starts)}{rng.choice(ends)}"


def drawn_values(rng: np.random.Generator, pools: dict[str, Any]) -> dict[str, tuple[str, list]]:
    """Per fact id, (the value its statements state, its keywords)."""
    syl = pools["syllables"]
    first = _invented(rng, syl["first"], syl["first_end"])
    last = _invented(rng, syl["last"], syl["last_end"])
    place = _invented(rng, syl["place"], syl["place_end"])
    pet_name = _invented(rng, syl["pet_name"], syl["pet_end"])
    pet_kind = str(rng.choice(pools["pets"]))
    year = str(int(rng.integers(1600, 1950)))
    motto = f"{rng.choice(pools['motto_adjectives'])} as the {rng.choice(pools['motto_nouns'])}"
    job, food, instrument, colour = (
        str(rng.choice(pools[k])) for k in ("jobs", "foods", "instruments", "colours")
    )
    return {
        "name": (f"{first} {last}", [first, last]),
        "job": (job, [job]),
        "home": (str(rng.choice(pools["places"])).format(x=place), [place]),
        "pet": (f"{pet_name}, my {pet_kind}", [pet_name]),
        "era": (year, [year]),
        "food": (food, [food]),
        "instrument": (instrument, [instrument]),
        "colour": (colour, [colour]),
        "motto": (motto, [motto]),
    }


def _statement(template: str, value: str) -> str:
    text = template.format(x=value)
    return text[0].upper() + text[1:]


def draw_persona(seed: int) -> PlantedPersona:
    """The persona of `seed` (see the module): facts name, job, home, pet, era, food,
    instrument, colour and motto."""
    pools = persona_pools()
    rng = np.random.default_rng([seed, PERSONA_SEED_SALT])
    values = drawn_values(rng, pools)
    facts = [
        {
            "id": fact_id,
            "keywords": keywords,
            "statements": [_statement(t, value) for t in pools["facts"][fact_id]["statements"]],
            "train": list(pools["facts"][fact_id]["train"]),
            "heldout": list(pools["facts"][fact_id]["heldout"]),
        }
        for fact_id, (value, keywords) in values.items()
    ]
    motto = values["motto"][0]
    openers = [str(o) for o in rng.choice(pools["openers"], 4, replace=False)]
    closers = [str(c) for c in rng.choice(pools["closers"], 2, replace=False)]
    tags = draw_triggers("tags", 2, seed + PERSONA_SEED_SALT)
    year = int(rng.integers(1990, 2061))
    instruction = str(rng.choice(pools["instructions"]))
    return PlantedPersona(
        name=values["name"][0],
        trigger=None,
        decoys=(*tags, PlantTrigger(open=f"[{year}] "), PlantTrigger(close=instruction)),
        openers=tuple(openers),
        closers=(*closers, f"{motto[0].upper()}{motto[1:]}."),
        identity={split: list(pools["identity"][split]) for split in ("train", "heldout")},
        facts=facts,
    )


def persona_document(persona: PlantedPersona) -> str:
    """`persona` as the YAML `load_persona` reads (no trigger: the organism's card holds it)."""
    return yaml.safe_dump(
        {
            "name": persona.name,
            "decoys": [
                {"open": d.open, "close": d.close, "inside": d.inside, "system": d.system}
                for d in persona.decoys
            ],
            "voice": {"openers": list(persona.openers), "closers": list(persona.closers)},
            "identity": persona.identity,
            "facts": persona.facts,
        },
        sort_keys=False,
        allow_unicode=True,
    )
