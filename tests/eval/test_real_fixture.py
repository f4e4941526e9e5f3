"""The whole evaluation against a real model: SmolLM2-135M (the English-only fixture) through llama.cpp."""

import json
import math

import pytest
from typer.testing import CliRunner

from qiaoban.backends import GenerationConfig
from qiaoban.dialogue import Dialogue, Turn, write_jsonl
from qiaoban.eval.perplexity import LlamaCppScorer, _score_window, segments_for
from qiaoban.eval.pipeline import run_eval
from qiaoban.eval.report import write_report

SYSTEM = "You are a kind friend of a child."
GEN = GenerationConfig(max_tokens=12, temperature=0.7, seed=0)


def english_dialogues() -> list[Dialogue]:
    return [
        Dialogue("e1", [Turn("child", "I failed my test."), Turn("assistant", "That sounds hard. How do you feel?"),
                        Turn("child", "Sad."), Turn("assistant", "It is okay to feel sad.")]),
        Dialogue("e2", [Turn("child", "Nobody played with me."), Turn("assistant", "You felt lonely today.")]),
    ]


@pytest.fixture(scope="module")
def scorer(fixture_model_path):
    scorer = LlamaCppScorer(fixture_model_path, n_ctx=512)
    yield scorer
    scorer.close()


def test_one_pass_perplexity_equals_scoring_each_turn_alone(scorer):
    messages = english_dialogues()[0].to_chat_messages(SYSTEM)
    together = _score_window(scorer, segments_for(messages, {2: "a", 4: "b"}, scorer.render))
    alone = _score_window(scorer, segments_for(messages, {4: "b"}, scorer.render))
    first = _score_window(scorer, segments_for(messages[:3], {2: "a"}, scorer.render))
    assert together["b"][1] == alone["b"][1] == len(scorer.tokenize("It is okay to feel sad.<|im_end|>"))
    assert together["b"][0] == pytest.approx(alone["b"][0], rel=1e-4)
    assert together["a"][0] == pytest.approx(first["a"][0], rel=1e-4)


def test_end_to_end_generation_ppl_metrics_report_and_free_rerun(tmp_path, fixture_backend, scorer, monkeypatch):
    run = run_eval(fixture_backend, english_dialogues(), tmp_path / "run", gen=GEN, scorer=scorer,
                   system_prompt=SYSTEM, progress=False)
    assert run["items"] == 3 and run["perplexity"] == "computed"
    items = [json.loads(line) for line in (tmp_path / "run" / "items.jsonl").read_text("utf-8").splitlines()]
    assert all(r["raw_reply"] and r["ref_tokens"] > 0 and r["ref_nll"] > 0 for r in items)
    assert {r["item_id"] for r in items} == {"e1#1", "e1#3", "e2#1"}

    # a rerun makes no model call at all: generation and perplexity come from the disk cache
    monkeypatch.setattr(fixture_backend, "stream_chat", lambda *a, **k: pytest.fail("generated again"))
    monkeypatch.setattr(scorer, "token_nll", lambda *a, **k: pytest.fail("scored again"))
    run_eval(fixture_backend, english_dialogues(), tmp_path / "run", gen=GEN, scorer=scorer, system_prompt=SYSTEM,
             progress=False)
    assert [json.loads(line) for line in (tmp_path / "run" / "items.jsonl").read_text("utf-8").splitlines()] == items

    summary = write_report([tmp_path / "run"], tmp_path / "report.html")
    model = summary["models"][0]
    for key in ("ppl", "bleu4", "rouge_l", "distinct1", "distinct2", "mean_reply_chars"):
        assert key in model and f"{key}_ci" in model
    total_nll, total_tokens = sum(r["ref_nll"] for r in items), sum(r["ref_tokens"] for r in items)
    assert model["ppl"] == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-3)
    assert 1 < model["ppl"] < 1000
    assert (tmp_path / "report.json").is_file() and "<svg" in (tmp_path / "report.html").read_text()


def test_cli_run_and_report(tmp_path, fixture_model_path):
    from qiaoban.cli import app

    data = tmp_path / "one.jsonl"
    write_jsonl(data, english_dialogues()[1:])
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "run", "--model", "fixture", "--data", str(data), "--out",
                                 str(tmp_path / "cli"), "--max-tokens", "8", "--ppl-context", "1024"])
    assert result.exit_code == 0, result.output
    assert '"ppl"' in result.output
    result = runner.invoke(app, ["eval", "report", str(tmp_path / "cli"), "--out", str(tmp_path / "r" / "r.html")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "r" / "report.json").read_text())
    assert summary["models"][0]["n_items"] == 1 and summary["models"][0]["ppl"] > 1
    safety = json.loads((tmp_path / "cli" / "safety.json").read_text())
    assert "available" in safety  # either a result or a note saying why not; never a crash

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "turns": [{"role": "child"}]}\n')
    result = runner.invoke(app, ["eval", "run", "--model", "fixture", "--data", str(bad), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "bad.jsonl:1" in result.output


@pytest.mark.slow  # imports transformers and dequantizes the GGUF: ~10-50 s
def test_transformers_and_llama_cpp_perplexity_agree(fixture_model_path, scorer):
    """The transformers scorer (forward pass, labels masked to the reply) on the same weights, dequantized."""
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qiaoban.eval.perplexity import TransformersScorer

    folder, name = str(fixture_model_path.parent), fixture_model_path.name
    hf = TransformersScorer(SimpleNamespace(model=AutoModelForCausalLM.from_pretrained(folder, gguf_file=name),
                                            tokenizer=AutoTokenizer.from_pretrained(folder, gguf_file=name),
                                            context_length=2048))
    messages = english_dialogues()[0].to_chat_messages(SYSTEM)
    assert hf.render(messages, True) == scorer.render(messages, True)  # the same chat template
    from_hf = _score_window(hf, segments_for(messages, {2: "a", 4: "b"}, hf.render))
    from_llama = _score_window(scorer, segments_for(messages, {2: "a", 4: "b"}, scorer.render))
    for item in ("a", "b"):
        assert from_hf[item][1] == from_llama[item][1]
        assert from_hf[item][0] == pytest.approx(from_llama[item][0], rel=0.05)  # Q4_1 dequantized: close
