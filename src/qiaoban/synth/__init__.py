"""Synthesis of emotion-coaching dialogues by a teacher model: topics, prompts, parsing, robust runs.

    from qiaoban.synth import SynthConfig, run_synth, parse_dialogue, load_scenarios, sample_scenarios
    report = run_synth(backend, SynthConfig(n=100, out=Path("synth.jsonl"), workers=4))
"""

from qiaoban.synth.parse import PARSE_REASONS, ParseResult, classify_tag, parse_dialogue
from qiaoban.synth.prompts import ChildPersona, Request, build_messages, make_request
from qiaoban.synth.runner import SynthConfig, SynthError, dry_run, item_id, run_synth
from qiaoban.synth.topics import (
    Scenario,
    TopicFileError,
    import_topic_list,
    iter_scenarios,
    load_scenarios,
    load_taxonomy,
    sample_scenarios,
    split_topic_line,
)

__all__ = [
    "PARSE_REASONS",
    "ChildPersona",
    "ParseResult",
    "Request",
    "Scenario",
    "SynthConfig",
    "SynthError",
    "TopicFileError",
    "build_messages",
    "classify_tag",
    "dry_run",
    "import_topic_list",
    "item_id",
    "iter_scenarios",
    "load_scenarios",
    "load_taxonomy",
    "make_request",
    "parse_dialogue",
    "run_synth",
    "sample_scenarios",
    "split_topic_line",
]
