"""Guardian events in SQLite."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from qiaoban.safety import EventStore, check


def test_record_and_list_newest_first_without_the_childs_words(tmp_path):
    store = EventStore(tmp_path / "events.db")
    first = store.record(check("我想离家出走"), session_id="s1", text="我想离家出走")
    second = store.record(check("我爸用皮带抽我"), session_id="s2", text="我爸用皮带抽我", store_text=True)
    assert first.text is None and second.text == "我爸用皮带抽我"
    events = store.list()
    assert [e.category for e in events] == ["physical_abuse", "running_away"]
    assert events[0].severity == "urgent" and events[0].session_id == "s2" and events[0].created_at > 0
    assert events[1].text is None  # nothing of the child's words was written
    raw = sqlite3.connect(tmp_path / "events.db").execute("SELECT text FROM safety_events").fetchall()
    assert (None,) in raw and ("我想离家出走",) not in raw


def test_list_filters_by_session_and_limits(tmp_path):
    store = EventStore(tmp_path / "events.db")
    for i in range(5):
        store.record(check("我不想活了"), session_id="a" if i % 2 else "b")
    assert len(store.list(session_id="a")) == 2
    assert len(store.list(limit=3)) == 3
    assert store.list(session_id="nobody") == []


def test_store_uses_wal_and_survives_concurrent_writers(tmp_path):
    store = EventStore(tmp_path / "events.db")
    verdict = check("他们天天向我要钱 不给就打我")
    threads = [threading.Thread(target=lambda: [store.record(verdict, "t") for _ in range(10)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.list(limit=100)) == 40
    mode = sqlite3.connect(tmp_path / "events.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_benign_verdict_is_not_an_event(tmp_path):
    with pytest.raises(ValueError):
        EventStore(tmp_path / "events.db").record(check("今天天气真好"))
