"""Chat with the companion: persona, system prompt, history, spoken-style streaming, safety hooks."""

from qiaoban.chat.engine import ChatEngine, Guard, Persona, Reply, ReplyStream, Verdict
from qiaoban.chat.history import ContextOverflowError, trim_history

__all__ = ["ChatEngine", "ContextOverflowError", "Guard", "Persona", "Reply", "ReplyStream", "Verdict", "trim_history"]
