"""Teacher prompts: one self-contained request per dialogue (scenario + child persona + target shape).

Everything random about a request comes from its own `random.Random(seed, index)`, so the request for an index
is the same in every run and every worker builds it without touching shared state.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from qiaoban.backends import Message
from qiaoban.config import load_yaml
from qiaoban.synth.topics import Scenario

PROMPT_KEYS = ("version", "companion_name", "child_tag", "companion_tag", "system", "user", "openings", "rounds",
               "child_len", "companion_len")


@cache
def prompt_templates(path: str | None = None) -> dict[str, Any]:
    """The packaged prompts.yaml, or a file of the same shape (another language, another teacher)."""
    if path is None:
        return yaml.safe_load(resources.files("qiaoban.synth").joinpath("prompts.yaml").read_text("utf-8"))
    data = load_yaml(path)
    missing = [k for k in PROMPT_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: prompt file lacks {', '.join(missing)}")
    return data


@cache
def persona_parts() -> dict[str, Any]:
    return yaml.safe_load(resources.files("qiaoban.synth").joinpath("personas.yaml").read_text("utf-8"))


@dataclass(frozen=True)
class ChildPersona:
    name: str
    age: int
    age_band: str
    grade: str
    temperament: str
    speech: str


@dataclass(frozen=True)
class Request:
    """Everything the teacher is asked for one dialogue."""

    index: int
    scenario: Scenario
    prompts: str | None  # the prompt file (None: the packaged one)
    persona: ChildPersona
    emotion: str
    opening: str
    rounds: int
    child_len: str
    companion_len: str

    def meta(self) -> dict[str, Any]:
        """What a generated record keeps about how it was asked for."""
        return {
            "index": self.index,
            "category": self.scenario.category_id,
            "topic": self.scenario.topic,
            "scenario": self.scenario.text,
            "persona": asdict(self.persona),
            "target_rounds": self.rounds,
            "prompt_version": prompt_templates(self.prompts)["version"],
        }


def item_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"synth-item:{seed}:{index}")


def make_persona(rng: random.Random, age_bands: tuple[str, ...]) -> ChildPersona:
    parts = persona_parts()
    band = rng.choice(list(age_bands))
    age = rng.choice(parts["age_bands"][band]["ages"])
    speech = [s["text"] for s in parts["speech"] if s.get("min_age", 0) <= age <= s.get("max_age", 99)]
    return ChildPersona(
        name=rng.choice(parts["names"]),
        age=age,
        age_band=band,
        grade=parts["grades"][age],
        temperament=rng.choice(parts["temperaments"]),
        speech=rng.choice(speech),
    )


def make_request(scenario: Scenario, seed: int, index: int, prompts: str | None = None) -> Request:
    rng = item_rng(seed, index)
    t = prompt_templates(prompts)
    return Request(
        index=index,
        scenario=scenario,
        prompts=prompts,
        persona=make_persona(rng, scenario.age_bands),
        emotion=rng.choice(scenario.emotions),
        opening=rng.choice(t["openings"]),
        rounds=rng.choice(t["rounds"]),
        child_len=rng.choice(t["child_len"]),
        companion_len=rng.choice(t["companion_len"]),
    )


def build_messages(request: Request) -> list[Message]:
    t = prompt_templates(request.prompts)
    p = request.persona
    fields = {
        "companion": t["companion_name"],
        "child_tag": t["child_tag"],
        "companion_tag": t["companion_tag"],
        "age_desc": persona_parts()["age_bands"][p.age_band]["describe"],
        "scenario": request.scenario.text,
        "category": request.scenario.category,
        "topic": request.scenario.topic,
        "name": p.name,
        "age": p.age,
        "grade": p.grade,
        "temperament": p.temperament,
        "speech": p.speech,
        "emotion": request.emotion,
        "opening": request.opening,
        "rounds": request.rounds,
        "child_len": request.child_len,
        "companion_len": request.companion_len,
    }
    return [
        {"role": "system", "content": t["system"].format(**fields).strip()},
        {"role": "user", "content": t["user"].format(**fields).strip()},
    ]
