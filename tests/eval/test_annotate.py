"""Blind pairwise annotation: sheets, the key, a judge filling the sheet, unblinding and agreement; the page in
Debian's chromium; two real runs (the fixture through the chat engine) exported, judged over loopback, imported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from qiaoban.backends import GenerationConfig
from qiaoban.cli import app
from qiaoban.eval.annotate import (
    CRITERIA,
    AnnotationError,
    export_sheet,
    fill_with_judge,
    import_judgements,
    parse_choices,
    read_sheet,
)
from qiaoban.eval.pipeline import run_eval
from qiaoban.eval.report import write_report
from tests.eval.doubles import ScriptedBackend, dialogues


def make_runs(tmp_path: Path) -> tuple[Path, Path]:
    first = ScriptedBackend(lambda m, g: "第一个模型：" + m[-1]["content"][:4], name="alpha-run")
    second = ScriptedBackend(lambda m, g: "第二个模型：" + m[-1]["content"][:4], name="beta-run")
    for backend in (first, second):
        run_eval(backend, dialogues()[:2], tmp_path / backend.name, system_prompt="你是小桥。", progress=False)
    return tmp_path / "alpha-run", tmp_path / "beta-run"


def write_lines(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    return path


def test_export_is_blind_seeded_and_keeps_the_key_apart(tmp_path):
    run_a, run_b = make_runs(tmp_path)
    key = export_sheet(run_a, run_b, tmp_path / "sheet", seed=3, per_dialogue=5)
    rows = read_sheet(tmp_path / "sheet")
    assert len(rows) == len(key["items"]) == 3  # the items both runs answered
    sheet_text = (tmp_path / "sheet" / "sheet.jsonl").read_text("utf-8")
    page = (tmp_path / "sheet" / "sheet.html").read_text("utf-8")
    for secret in ("alpha-run", "beta-run", str(run_a)):
        assert secret not in sheet_text and secret not in page
    for row in rows:  # the key says which run each shown reply came from
        order = key["items"][row["item_id"]]
        assert row["A"].startswith("第一个" if order["A"] == 0 else "第二个")
        assert {order["A"], order["B"]} == {0, 1}
        assert row["context"][-1]["role"] == "child"
    again = export_sheet(run_a, run_b, tmp_path / "again", seed=3, per_dialogue=5)
    assert again == key
    orders = {export_sheet(run_a, run_b, tmp_path / f"s{s}", seed=s, per_dialogue=5)["items"]["d1#1"]["A"]
              for s in range(8)}
    assert orders == {0, 1}  # the order really is randomised
    one_cut = export_sheet(run_a, run_b, tmp_path / "one", seed=0)
    assert len({i.split("#")[0] for i in one_cut["items"]}) == len(one_cut["items"]) == 2


def test_a_run_of_one_cut_per_dialogue_answers_what_the_sheet_shows(tmp_path):
    run_a, run_b = make_runs(tmp_path)
    sampled = ScriptedBackend(lambda m, g: "抽样：" + m[-1]["content"][:4], name="sampled")
    run = run_eval(sampled, dialogues()[:2], tmp_path / "sampled", system_prompt="你是小桥。", per_dialogue=1,
                   progress=False)
    answered = [json.loads(line)["item_id"] for line in (tmp_path / "sampled" / "items.jsonl").open(encoding="utf-8")]
    assert run["items"] == 2 and run["cuts_per_dialogue"] == 1
    assert len({i.split("#")[0] for i in answered}) == 2  # one cut of each dialogue
    key = export_sheet(run_a, tmp_path / "sampled", tmp_path / "sheet")
    assert sorted(key["items"]) == sorted(answered)
    assert export_sheet(run_a, run_b, tmp_path / "full")["items"].keys() == key["items"].keys()


def unblinded(key: dict, item_id: str, winner: int) -> str:
    """The sheet letter under which run `winner` was shown."""
    return "A" if key["items"][item_id]["A"] == winner else "B"


def test_import_unblinds_counts_ties_and_measures_agreement(tmp_path):
    run_a, run_b = make_runs(tmp_path)
    sheet = tmp_path / "sheet"
    key = export_sheet(run_a, run_b, sheet, per_dialogue=5)
    items = sorted(key["items"])
    raters = []
    for name, winners in (("r1", [0, 0, 1]), ("r2", [0, 0, 1]), ("r3", [0, None, 1])):
        records = [{"sheet": key["sheet"], "rater": name, "item_id": i,
                    "choices": {c: "tie" if w is None else unblinded(key, i, w) for c in CRITERIA}}
                   for i, w in zip(items, winners, strict=True)]
        records[0]["harmful"] = [unblinded(key, items[0], 1)] if name != "r3" else []  # two of three
        if name == "r3":
            records[2]["harmful"] = [unblinded(key, items[2], 0)]  # one of three
        raters.append(write_lines(tmp_path / f"{name}.jsonl", records))
    results = import_judgements(sheet, raters)
    overall = results["criteria"]["overall"]
    assert results["runs"] == ["alpha-run", "beta-run"] and results["raters"] == ["r1", "r2", "r3"]
    assert (overall["first_wins"], overall["second_wins"], overall["ties"]) == (5, 3, 1)
    assert overall["win_rate"] == pytest.approx(5 / 8) and overall["tie_rate"] == pytest.approx(1 / 9, abs=1e-4)
    low, high = overall["win_rate_ci"]
    assert 0 <= low <= 5 / 8 <= high <= 1
    assert 0.5 < overall["alpha"] < 1  # two raters agree fully, the third once calls a tie
    assert results["harmful"] == {
        "alpha-run": {"flagged_by_any": 1, "flagged_by_majority": 0, "items": {items[2]: "1/3"}},
        "beta-run": {"flagged_by_any": 1, "flagged_by_majority": 1, "items": {items[0]: "2/3"}}}
    perfect = import_judgements(sheet, raters[:2])["criteria"]["overall"]
    assert perfect["alpha"] == pytest.approx(1.0)
    assert json.loads((sheet / "results.json").read_text("utf-8")) == import_judgements(sheet, raters[:2])

    report = write_report([run_a, run_b], tmp_path / "report.html", annotations=[sheet])
    assert report["annotations"][0]["criteria"]["overall"]["alpha"] == pytest.approx(1.0)
    page = (tmp_path / "report.html").read_text("utf-8")
    assert "Blind pairwise judgements" in page and "Replies marked harmful" in page


def test_bad_judgement_files_are_clear_errors(tmp_path):
    run_a, run_b = make_runs(tmp_path)
    sheet = tmp_path / "sheet"
    key = export_sheet(run_a, run_b, sheet, per_dialogue=5)
    item = sorted(key["items"])[0]
    cases = {
        "not JSON": "{oops\n",
        "sheet other": json.dumps({"sheet": "other", "rater": "r", "item_id": item, "choices": {}}) + "\n",
        "not on this sheet": json.dumps({"sheet": key["sheet"], "rater": "r", "item_id": "zz#1", "choices": {}}) + "\n",
        "unknown criteria": json.dumps({"sheet": key["sheet"], "rater": "r", "item_id": item,
                                        "choices": {"overall": "C"}}) + "\n",
        "harmful must list": json.dumps({"sheet": key["sheet"], "rater": "r", "item_id": item, "choices": {},
                                         "harmful": ["C"]}) + "\n",
    }
    for message, text in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text(text, "utf-8")
        with pytest.raises(AnnotationError, match=message.split()[0]) as err:
            import_judgements(sheet, [path])
        assert "bad.jsonl:1" in str(err.value)
    with pytest.raises(AnnotationError, match="no such judgement file"):
        import_judgements(sheet, [tmp_path / "missing.jsonl"])
    result = CliRunner().invoke(app, ["eval", "annotate", "import", str(sheet), str(tmp_path / "bad.jsonl")])
    assert result.exit_code == 2 and "error:" in result.output


def test_judge_choices_are_parsed_and_order_bias_becomes_a_tie(tmp_path):
    assert parse_choices('好的 {"empathy": "A", "overall": "tie", "bogus": "A"}') == {"empathy": "A", "overall": "tie"}
    assert parse_choices("empathy: B\noverall：A") == {"empathy": "B", "overall": "A"}
    assert parse_choices("我不知道") == {}
    run_a, run_b = make_runs(tmp_path)
    sheet = tmp_path / "sheet"
    key = export_sheet(run_a, run_b, sheet, per_dialogue=5)

    def always_first(messages, gen):  # a judge that always prefers whatever is shown as A
        return json.dumps({c: "A" for c in CRITERIA})

    def prefers_first_run(messages, gen):
        prompt = messages[-1]["content"]
        a_first = prompt.index("第一个模型") < prompt.index("第二个模型")
        return json.dumps({c: "A" if a_first else "B" for c in CRITERIA})

    biased = fill_with_judge(ScriptedBackend(always_first), sheet, rater="biased", progress=False)
    judged = ScriptedBackend(prefers_first_run, name="fair")
    fair = fill_with_judge(judged, sheet, rater="fair", progress=False)
    assert judged.calls == 2 * len(key["items"])  # both orders
    results = import_judgements(sheet, [biased])
    assert results["criteria"]["overall"]["ties"] == len(key["items"])
    results = import_judgements(sheet, [fair])
    assert results["criteria"]["overall"]["win_rate"] == 1.0
    rerun = ScriptedBackend(prefers_first_run, name="fair")
    fill_with_judge(rerun, sheet, rater="fair", progress=False)
    assert rerun.calls == 0  # cached


@pytest.mark.browser
def test_the_sheet_page_takes_keyboard_choices_keeps_progress_and_downloads(tmp_path):
    from tests.serve.test_browser import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    run_a, run_b = make_runs(tmp_path)
    sheet = tmp_path / "sheet"
    key = export_sheet(run_a, run_b, sheet, per_dialogue=5)
    rows = read_sheet(sheet)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_context(accept_downloads=True).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on("request", lambda req: errors.append(req.url) if not req.url.startswith("file:") else None)
        page.goto((sheet / "sheet.html").as_uri())
        assert page.inner_text("#reply-A") == rows[0]["A"]
        assert page.inner_text("#context").endswith(rows[0]["context"][-1]["text"])
        page.fill("#rater", "tester")
        page.click("body")
        for letter in "abtab":  # five criteria of item 1, then the page moves on
            page.keyboard.press(letter)
        assert page.inner_text("#position") == "2"
        page.keyboard.press("b")
        page.keyboard.press("2")  # reply B of item 2 is harmful
        assert "harmful" in page.get_attribute("#box-B", "class")
        page.reload()  # progress survives a reload
        assert page.inner_text("#position") == "2" and page.input_value("#rater") == "tester"
        with page.expect_download() as download_info:
            page.click("#download")
        path = tmp_path / "downloaded.jsonl"
        download_info.value.save_as(path)
        browser.close()
    assert errors == []
    lines = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    assert lines[0] == {"sheet": key["sheet"], "rater": "tester", "item_id": rows[0]["item_id"],
                        "choices": dict(zip(CRITERIA, ["A", "B", "tie", "A", "B"], strict=True)), "harmful": []}
    assert lines[1]["harmful"] == ["B"]
    assert lines[1]["choices"] == {"empathy": "B"}
    results = import_judgements(sheet, [path])
    assert results["criteria"]["overall"]["judgements"] == 1


def test_fixture_runs_through_the_engine_exported_judged_by_a_real_server_and_imported(
        tmp_path, fixture_backend, fixture_model_path):
    from qiaoban.backends import load_backend
    from qiaoban.safety import SafetyGuard
    from tests.helpers import llama_cpp_server

    gen = GenerationConfig(max_tokens=12, temperature=0.7, seed=0)
    guarded = run_eval(fixture_backend, dialogues()[:2], tmp_path / "guarded", gen=gen, through_engine=True,
                       guard=SafetyGuard(use_head=False), progress=False)
    plain = run_eval(fixture_backend, dialogues()[:2], tmp_path / "plain", gen=gen, progress=False)
    assert guarded["style"].startswith("through the chat engine (guard: SafetyGuard")
    assert plain["style"] == "raw model output"
    items = [json.loads(line) for line in (tmp_path / "guarded" / "items.jsonl").read_text("utf-8").splitlines()]
    assert all(r["reply"] for r in items) and {r["item_id"] for r in items} == {"d1#1", "d1#3", "d2#1"}
    export_sheet(tmp_path / "guarded", tmp_path / "plain", tmp_path / "sheet", per_dialogue=5)
    with llama_cpp_server(fixture_model_path, alias="smollm2") as url:
        judge = load_backend("openai", base_url=url, api_model="smollm2", timeout_s=300)
        path = fill_with_judge(judge, tmp_path / "sheet", rater="smollm2", max_tokens=24, progress=False)
    lines = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    assert len(lines) == 3 and all(set(r["choices"]) <= set(CRITERIA) for r in lines)
    results = import_judgements(tmp_path / "sheet", [path])  # the weak judge's output lands in the same format
    assert results["raters"] == ["smollm2"]
    counted = sum(c["judgements"] for c in results["criteria"].values())
    assert counted == sum(len(r["choices"]) for r in lines)
    assert np.isfinite(counted)
