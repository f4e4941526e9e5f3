"""Topic taxonomy, topic-list import, seeded stratified sampling and request building."""

from __future__ import annotations

from collections import Counter

import pytest

from qiaoban.synth.prompts import build_messages, make_request
from qiaoban.synth.topics import (
    AGE_BANDS,
    TopicFileError,
    import_topic_list,
    load_scenarios,
    load_taxonomy,
    sample_scenarios,
    split_topic_line,
)


def test_packaged_taxonomy_is_large_and_complete():
    scenarios = load_taxonomy()
    assert len(scenarios) >= 500 and len({s.text for s in scenarios}) == len(scenarios)
    categories = {s.category_id for s in scenarios}
    assert {"school", "friendship", "family", "study", "hobbies", "health", "loss", "changes", "online",
            "risk"} <= categories
    for s in scenarios:
        assert s.emotions and set(s.age_bands) <= set(AGE_BANDS) and s.text and s.topic


def test_sampling_is_seeded_and_prefix_stable():
    scenarios = load_taxonomy()
    a = sample_scenarios(scenarios, 200, seed=1)
    assert a == sample_scenarios(scenarios, 200, seed=1)
    assert a[:50] == sample_scenarios(scenarios, 50, seed=1)
    assert a != sample_scenarios(scenarios, 200, seed=2)


def test_sampling_is_stratified_without_near_repeats():
    scenarios = load_taxonomy()
    categories = sorted({s.category_id for s in scenarios})
    k = 5
    sample = sample_scenarios(scenarios, k * len(categories), seed=4)
    assert Counter(s.category_id for s in sample) == dict.fromkeys(categories, k)
    # never the same category (hence never the same topic) twice in a row
    assert all(a.category_id != b.category_id for a, b in zip(sample, sample[1:], strict=False))
    # inside a category a topic comes back only after every other topic of that category had its turn
    by_cat: dict[str, list[str]] = {}
    for s in sample_scenarios(scenarios, 40 * len(categories), seed=4):
        by_cat.setdefault(s.category_id, []).append(s.topic)
    for cat, topics in by_cat.items():
        n_topics = len({s.topic for s in scenarios if s.category_id == cat})
        for i in range(0, len(topics) - n_topics + 1, n_topics):
            assert len(set(topics[i : i + n_topics])) == n_topics
    # and a scenario comes back only after every other scenario of its topic had its turn
    by_topic: dict[tuple[str, str], list[str]] = {}
    for s in sample_scenarios(scenarios, 40 * len(categories), seed=4):
        by_topic.setdefault((s.category_id, s.topic), []).append(s.text)
    for (cat, topic), texts in by_topic.items():
        size = len({s.text for s in scenarios if (s.category_id, s.topic) == (cat, topic)})
        for i in range(0, len(texts) - size + 1, size):
            assert len(set(texts[i : i + size])) == size


def test_split_topic_line():
    assert split_topic_line("篮球、足球、 跑步、") == ["篮球", "足球", "跑步"]
    assert split_topic_line("衣服评价（美观、舒适）、想买衣服") == ["衣服评价（美观、舒适）", "想买衣服"]
    assert split_topic_line('"父母非要我学XX，我觉得很讨厌。父母不让我玩，难过而且生气。') == [
        "父母非要我学XX，我觉得很讨厌", "父母不让我玩，难过而且生气"]
    assert split_topic_line("“快乐童年”才艺小舞台、运动会") == ["“快乐童年”才艺小舞台", "运动会"]


def test_import_topic_list_handles_duplicates_and_quotes(tmp_path):
    path = tmp_path / "topics.txt"
    path.write_text('篮球、足球\n"父母吵架了，我很害怕。\n\n足球、游泳、篮球\n', encoding="utf-8")
    scenarios = import_topic_list(path)
    assert [s.text for s in scenarios] == ["篮球", "足球", "父母吵架了，我很害怕", "游泳"]
    assert [s.category_id for s in scenarios] == ["topics:1", "topics:1", "topics:2", "topics:4"]
    assert scenarios[-1].category == "游泳" and scenarios[0].emotions


def test_import_the_qiaoban_topic_list(shared_data):
    scenarios = load_scenarios(shared_data / "qiaoban" / "topic.txt")
    texts = [s.text for s in scenarios]
    assert len(texts) == len(set(texts)) and len(texts) > 450
    assert not any(t.startswith(('"', "“")) and t.count("“") != t.count("”") for t in texts)
    assert "衣服评价（美观、舒适）" in texts
    sample = sample_scenarios(scenarios, 100, seed=0)
    assert len({s.category_id for s in sample}) >= 90  # spread over the list's ~97 themes


def test_bad_topic_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("categories: [{id: x, name: y}]", encoding="utf-8")
    with pytest.raises(TopicFileError, match="bad.yaml"):
        load_scenarios(bad)
    with pytest.raises(TopicFileError, match="not found"):
        load_scenarios(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n、\n", encoding="utf-8")
    with pytest.raises(TopicFileError, match="no topics"):
        load_scenarios(empty)


def test_requests_are_deterministic_per_item_and_fit_the_scenario():
    scenario = load_taxonomy()[0]
    a, b = make_request(scenario, 7, 12), make_request(scenario, 7, 12)
    assert a == b and build_messages(a) == build_messages(b)
    others = {make_request(scenario, 7, i).persona for i in range(30)}
    assert len(others) > 10  # personas vary between items
    assert a.persona.age_band in scenario.age_bands and a.emotion in scenario.emotions
    system, user = build_messages(a)
    assert system["role"] == "system" and "察觉" in system["content"] and "引导" in system["content"]
    assert scenario.text in user["content"] and a.persona.name in user["content"]
    assert f"一共{a.rounds}轮" in user["content"]


def test_the_system_prompt_is_shared_so_servers_can_cache_its_tokens():
    scenarios = load_taxonomy()
    systems = {build_messages(make_request(scenarios[i * 37], 1, i))[0]["content"] for i in range(12)}
    assert len(systems) == 1
