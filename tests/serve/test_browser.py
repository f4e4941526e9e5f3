"""The child's page in Debian's chromium (Playwright): a streamed reply, and the help-line card.

Set QIAOBAN_SCREENSHOT_MODEL=default to run the page on the 1.5B model (real Chinese replies) and write the
README screenshot to docs/web-chat.png (with QIAOBAN_SCREENSHOT_BASE_URL, the model is taken from an
OpenAI-compatible server that already has it loaded). By default it runs on the fixture and the screenshot
stays in tmp.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qiaoban.serve import ServeSettings
from tests.serve.conftest import GUARDIAN_TOKEN, running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PHONE = {"width": 390, "height": 844}  # a common phone screen, in CSS pixels
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "web-chat.png"

pytestmark = pytest.mark.browser


@pytest.fixture
def page():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True,
                                      locale="zh-CN")
        yield context.new_page()
        browser.close()


@pytest.fixture
def page_server(request, tmp_path):
    model = os.environ.get("QIAOBAN_SCREENSHOT_MODEL")
    if model:
        from qiaoban.backends import load_backend

        base_url = os.environ.get("QIAOBAN_SCREENSHOT_BASE_URL")
        backend = (load_backend("openai", base_url=base_url, api_model=model) if base_url
                   else load_backend("llama", model=model))
        settings = ServeSettings(db_path=tmp_path / "serve.db", model_id=model, guardian_token=GUARDIAN_TOKEN,
                                 reply_tokens=120, request_timeout_s=600)
    else:
        backend = request.getfixturevalue("fixture_backend")
        # Greedy: the fixture's reply is then the same every run, several clauses long (streamed piece by piece).
        settings = ServeSettings(db_path=tmp_path / "serve.db", model_id="fixture", guardian_token=GUARDIAN_TOKEN,
                                 reply_tokens=48, reply_temperature=0.0, reply_seed=0)
    with running_server(backend, settings) as url:
        yield url, model
    if model:
        backend.close()


def test_chat_page_streams_and_shows_help_line_card(page, page_server, tmp_path):
    url, model = page_server
    wait_ms = 600_000 if model else 240_000
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)  # CSP too
    page.on("request", lambda req: errors.append(f"external request {req.url}")
            if not req.url.startswith(url) else None)
    page.goto(url)
    assert page.title().startswith("桥伴")
    assert page.evaluate("document.querySelector('meta[name=viewport]').content").startswith("width=device-width")
    page.wait_for_function("localStorage.getItem('qiaoban.session') !== null")

    # Record every text the reply bubble shows, to see it grow piece by piece.
    page.evaluate("""() => {
        window.__seen = [];
        new MutationObserver(() => {
            const bubble = document.querySelector('.bubble.assistant:not(.greeting):last-child');
            if (bubble && bubble.textContent) window.__seen.push(bubble.textContent);
        }).observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});
    }""")
    page.fill("#input", "我今天数学考试没考好，有点难过。" if model else "Hi! I got a new puppy today.")
    page.click("#send")
    page.wait_for_selector(".bubble.assistant:not(.greeting):not(.pending)", timeout=wait_ms)
    reply = page.inner_text(".bubble.assistant:not(.greeting)")
    seen = page.evaluate("window.__seen")
    assert reply.strip() and "failed" not in page.get_attribute(".bubble.assistant:not(.greeting)", "class")
    assert len(set(seen)) >= 2 and reply.startswith(seen[0])  # the reply grew piece by piece
    assert page.is_hidden("#helpline")

    # An emergency: a vetted template answers (no model call) and the card shows the numbers it names.
    page.fill("#input", "班上有同学总是欺负我，还说放学要打我" if model else "我已经决定了，药都准备好了")
    page.press("#input", "Enter")
    page.wait_for_selector("#helpline:not([hidden])", timeout=wait_ms)
    page.wait_for_selector(".bubble.assistant:not(.pending) >> nth=2")
    numbers = page.locator("#helpline .number").all_inner_texts()
    last_reply = page.locator(".bubble.assistant").last.inner_text()
    assert numbers and all(number in last_reply for number in numbers)  # the card repeats what the reply says
    assert model or {"120", "12356"} <= set(numbers)
    assert page.locator(f"#helpline a[href='tel:{numbers[0]}']").count() == 1
    assert page.locator(".bubble.child").count() == 2
    page.screenshot(path=str(DOCS_SCREENSHOT if model else tmp_path / "web-chat.png"))

    # A reload restores the conversation from the server.
    page.reload()
    page.wait_for_selector(".bubble.child >> nth=1")
    assert page.locator(".bubble.assistant:not(.greeting)").count() == 2
    assert not errors, errors
