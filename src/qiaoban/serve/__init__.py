"""Serving: an OpenAI-compatible API, a session API with SQLite storage, the child's web chat page and the
guardian view, on one backend with the safety layer on every request (`qiaoban serve`).

    from qiaoban.serve import ServeSettings, create_app
    app = create_app(load_backend("llama", model="fixture"), ServeSettings(db_path="serve.db"))
"""

from qiaoban.serve.app import create_app
from qiaoban.serve.deps import ServeSettings
from qiaoban.serve.store import Session, SessionStore

__all__ = ["ServeSettings", "Session", "SessionStore", "create_app"]
