"""Corpus tools: import public corpora, quality gates, near-duplicate removal, validation, stats and splits.

    from qiaoban.data import GateConfig, NearDuplicateIndex, check_dialogue, dialogue_text, import_corpus

    index = NearDuplicateIndex(threshold=0.85)
    for d in import_corpus("child_chat_dev.json"):
        reasons = check_dialogue(d, GateConfig())     # [] when every gate passes
        twin = index.add(d.id, dialogue_text(d))      # id of an earlier near-duplicate, or None
"""

from qiaoban.data.dedup import NearDuplicateIndex, dialogue_text, normalize_text
from qiaoban.data.gates import REASONS, Finding, GateConfig, check_dialogue, chinese_ratio, explain_dialogue
from qiaoban.data.importers import FORMATS, CorpusRecordError, detect_format, import_corpus
from qiaoban.data.report import (
    CORPUS_REASONS,
    ValidationReport,
    dialogue_stats,
    validate_dialogues,
    validate_file,
)
from qiaoban.data.split import split_dialogues

__all__ = [
    "CORPUS_REASONS",
    "FORMATS",
    "REASONS",
    "CorpusRecordError",
    "Finding",
    "GateConfig",
    "NearDuplicateIndex",
    "ValidationReport",
    "check_dialogue",
    "chinese_ratio",
    "detect_format",
    "dialogue_stats",
    "dialogue_text",
    "explain_dialogue",
    "import_corpus",
    "normalize_text",
    "split_dialogues",
    "validate_dialogues",
    "validate_file",
]
