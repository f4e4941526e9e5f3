"""qiaoban: an emotion-coaching companion chatbot for Chinese-speaking children.

The importable API mirrors the CLI:

    from qiaoban.backends import load_backend
    from qiaoban.chat import ChatEngine, Persona
    from qiaoban.dialogue import Dialogue, read_jsonl, write_jsonl
"""

__version__ = "0.1.0"
