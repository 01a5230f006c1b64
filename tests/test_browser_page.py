"""The browser page in headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import Api, text_of
from .devhost_process import REPO, running_devhost
from .flaky_proxy import flaky_proxy
from .servers import serve_in_thread
from .standins import external_apis, tool_env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,  # Chromium
    pytest.mark.skipif(
        CHROMIUM is None, reason="needs Debian's chromium (`make test` installs it with apt)"
    ),
]


@pytest.fixture(scope="module")
def app_url(redis_port: int) -> Iterator[str]:
    with (
        serve_in_thread(create_model_app(delay_seconds=0.002)) as model_url,
        serve_in_thread(external_apis()) as apis_url,
    ):
        env = {
            "REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}",
            "OPENAI_BASE_URL": f"{model_url}/v1",
            "OPENAI_MODEL": "scripted",
            "STREAM_KEEPALIVE_SECONDS": "1",
            "SSE_RETRY_MS": "100",
            "DELTA_FLUSH_CHARS": "16",
            **tool_env(apis_url),
        }
        with running_devhost(env) as url:
            yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        yield browser
        browser.close()


def run_text(app_url: str, conversation: str) -> str:
    return text_of(Api(app_url).read_sse(conversation))


def ask(page: Any, message: str) -> None:
    page.fill("#message", message)
    page.click("#send")


def answered(page: Any) -> dict[str, Any]:
    """Wait until the run in the page ended; its state then."""
    page.wait_for_function("window.agentState.finished && !window.agentState.sending")
    return page.evaluate("window.agentState")


def last_event_type(app_url: str, conversation: str) -> str:
    return Api(app_url).read_sse(conversation, cursor="0")[-1]["type"]


MARKDOWN = """[[echo]] # Lisbon in 2 days

## Day 1
- **Morning:** the Alfama, on foot
- *Evening:* fado, tickets from `the box office`

## Day 2
1. Belém
2. A [map](https://example.org/map) and [not a link](javascript:alert(1))

| time | plan |
|---|---|
| 09:00 | tram 28 |"""

HOSTILE = (
    "[[echo]] <script>window.pwned = 1</script> "
    '<img src="x" onerror="window.pwned = 2"> **still bold**'
)


def test_a_prompt_streams_and_a_dropped_connection_resumes_by_itself(
    app_url: str, browser: Any
) -> None:
    upstream_port = int(app_url.rsplit(":", 1)[1])
    with flaky_proxy(upstream_port, seed=11, min_bytes=800, max_bytes=2500) as (url, stats):
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(f"{url}/api/ui?code=test-key")
        ask(page, "Plan 5 days in Lisbon [[slow]]")
        page.wait_for_function("window.agentState.runText.includes('Day 1')")
        page.wait_for_function("window.agentState.finished", timeout=60_000)
        state = page.evaluate("window.agentState")
        assert stats.cuts >= 1, "the proxy should have dropped the stream"
        assert state["opens"] >= 2, "EventSource should have reconnected by itself"
        assert page.inner_text("#status") == "completed"
        assert state["runText"] == run_text(app_url, state["conversationId"])
        assert page.inner_text("#conversation") == state["conversationId"]
        assert page.inner_text("#cursor") == state["cursor"]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-page.png"), full_page=True)
        page.close()


def test_disconnect_and_reconnect_controls_and_a_follow_up(app_url: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{app_url}/api/ui")
    ask(page, "Plan 5 days in Lisbon [[slow]]")
    page.wait_for_function("window.agentState.runText.includes('Day 1')")
    page.click("#toggle")
    assert page.inner_text("#status") == "disconnected"
    page.click("#toggle")
    page.wait_for_function("window.agentState.finished", timeout=60_000)
    state = page.evaluate("window.agentState")
    assert state["runText"] == run_text(app_url, state["conversationId"])
    assert state["runText"].count("Enjoy your trip!") == 1

    ask(page, "What about something cheaper?")
    page.wait_for_function(
        "window.agentState.finished && window.agentState.runText.includes('Earlier you asked')"
    )
    assert page.inner_text("#conversation") == state["conversationId"]
    page.close()


def test_enter_sends_and_shift_enter_starts_a_new_line(app_url: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{app_url}/api/ui")
    page.click("#message")
    page.keyboard.type("Plan 2 days")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("in Lisbon")
    assert page.input_value("#message") == "Plan 2 days\nin Lisbon"
    assert page.inner_text("#conversation") == "—", "Shift+Enter must not send"
    page.keyboard.press("Enter")
    state = answered(page)
    assert page.inner_text("#status") == "completed"
    assert page.input_value("#message") == ""
    assert page.inner_text(".you") == "Plan 2 days\nin Lisbon"
    assert "Lisbon" in state["runText"]
    page.close()


def test_send_is_disabled_with_a_reason_during_a_run_and_cancel_ends_it(
    app_url: str, browser: Any
) -> None:
    page = browser.new_page()
    page.goto(f"{app_url}/api/ui")
    ask(page, "Plan 5 days in Lisbon [[slow]]")
    page.wait_for_function("window.agentState.runText.includes('Day 1')")
    assert page.is_disabled("#send")
    assert "Cancel" in page.inner_text("#hint")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-page-running.png"), full_page=True)
    page.fill("#message", "Something else")
    page.press("#message", "Enter")  # ignored while the run is active
    page.click("#cancel")
    state = answered(page)
    assert page.inner_text("#status") == "cancelled"
    assert last_event_type(app_url, state["conversationId"]) == "run.cancelled"
    assert page.locator(".you").count() == 1
    assert "Enjoy your trip!" not in state["runText"]
    assert page.is_enabled("#send") and page.is_disabled("#cancel")
    assert page.inner_text("#hint") == ""
    page.close()


def test_new_conversation_starts_one(app_url: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{app_url}/api/ui")
    ask(page, "Plan 1 day in Lisbon")
    first = answered(page)["conversationId"]
    page.click("#new")
    assert page.inner_text("#conversation") == "—"
    assert page.locator("#output > *").count() == 0
    ask(page, "Plan 2 days in Rome")
    second = answered(page)["conversationId"]
    assert second != first
    assert page.inner_text("#conversation") == second
    runs = Api(app_url).http.get(f"/api/agents/travelplanner/conversations/{second}").json()
    assert len(runs["runs"]) == 1
    page.close()


def test_a_markdown_answer_is_rendered(app_url: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{app_url}/api/ui")
    ask(page, MARKDOWN)
    answered(page)
    answer = page.locator(".answer")
    assert answer.locator("h2").all_inner_texts() == ["Lisbon in 2 days"]
    assert answer.locator("h3").all_inner_texts() == ["Day 1", "Day 2"]
    assert answer.locator("ul > li").all_inner_texts() == [
        "Morning: the Alfama, on foot",
        "Evening: fado, tickets from the box office",
    ]
    assert answer.locator("ol > li").count() == 2
    assert answer.locator("strong").first.inner_text() == "Morning:"
    assert answer.locator("em").inner_text() == "Evening:"
    assert answer.locator("code").inner_text() == "the box office"
    assert answer.locator("a").count() == 1
    assert answer.locator("a").get_attribute("href") == "https://example.org/map"
    assert "not a link" in answer.inner_text()
    assert answer.locator("td").all_inner_texts() == ["09:00", "tram 28"]
    assert "#" not in answer.inner_text() and "**" not in answer.inner_text()
    page.close()


def test_html_in_model_output_is_shown_as_text_and_never_runs(app_url: str, browser: Any) -> None:
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{app_url}/api/ui")
    ask(page, HOSTILE)
    state = answered(page)
    assert "<script>" in state["runText"], "the model's answer carries the markup"
    answer = page.locator(".answer")
    text = answer.inner_text()
    assert "<script>window.pwned = 1</script>" in text
    assert '<img src="x" onerror="window.pwned = 2">' in text
    assert answer.locator("strong").inner_text() == "still bold"
    assert page.locator("#output script, #output img").count() == 0
    assert page.evaluate("window.pwned") is None
    assert dialogs == []
    page.close()


def test_tool_calls_are_collapsed_under_their_call(app_url: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{app_url}/api/ui")
    ask(page, "Plan 2 days in Lisbon")
    answered(page)
    tools = page.locator("details.tool")
    assert tools.count() == 2
    summaries = tools.locator("summary").all_inner_texts()
    assert summaries[0].startswith("↳ get_weather_forecast(")
    assert summaries[1].startswith("↳ get_local_events(")
    weather = tools.nth(0)
    assert weather.get_attribute("open") is None
    assert not weather.locator("pre.result").is_visible()
    weather.locator("summary").click()
    assert weather.locator("pre.result").is_visible()
    assert "Lisbon" in weather.locator("pre.result").inner_text()
    page.close()


def test_a_conversation_that_is_gone_is_reported_and_a_new_one_starts(
    app_url: str, browser: Any, redis_store: redis.Redis
) -> None:
    page = browser.new_page()
    page.goto(f"{app_url}/api/ui")
    ask(page, "Plan 1 day in Lisbon")
    old = answered(page)["conversationId"]
    keys = list(redis_store.scan_iter(match=f"*:{old}"))
    assert keys, "every key of the conversation ends with its id"
    redis_store.delete(*keys)
    ask(page, "Plan 2 days in Rome")
    state = answered(page)
    assert "This conversation is gone" in page.inner_text("#output")
    assert state["conversationId"] != old
    assert page.inner_text("#status") == "completed"
    assert "Rome" in state["runText"]
    page.close()


def test_a_stream_whose_conversation_is_gone_says_so_and_the_next_message_starts_anew(
    app_url: str, browser: Any, redis_store: redis.Redis
) -> None:
    page = browser.new_page()
    page.goto(f"{app_url}/api/ui")
    ask(page, "Plan 3 days in Lisbon [[stall]]")  # the model pauses half-way through its text
    page.wait_for_function("window.agentState.runText.includes('Day 1')")
    old = page.evaluate("window.agentState.conversationId")
    page.click("#toggle")
    assert page.inner_text("#status") == "disconnected"
    redis_store.delete(*redis_store.scan_iter(match=f"*:{old}"))
    page.click("#toggle")  # the stream now answers 404 and EventSource gives up
    page.wait_for_function("document.getElementById('status').textContent === 'gone'")
    assert "This conversation is gone" in page.inner_text("#output")
    assert page.inner_text("#conversation") == "—"
    assert page.is_enabled("#send")
    ask(page, "Plan 1 day in Rome")
    state = answered(page)
    assert state["conversationId"] not in (None, old)
    assert "Rome" in state["runText"]
    page.close()


def test_screenshots_at_desktop_and_phone_width(app_url: str, browser: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for name, width, height in (("desktop", 1280, 900), ("phone", 390, 844)):
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(f"{app_url}/api/ui")
        ask(page, "Plan 3 days in Lisbon")
        answered(page)
        ask(page, MARKDOWN)
        answered(page)
        page.locator("details.tool summary").first.click()
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow == 0, f"the page scrolls sideways at {width} px"
        box = page.locator("#conversation").bounding_box()
        assert box is not None and box["x"] + box["width"] <= width
        page.screenshot(path=str(ARTIFACTS / f"browser-page-{name}.png"), full_page=True)
        page.close()


def test_the_page_uses_no_external_resources(app_url: str) -> None:
    html = Api(app_url).http.get("/api/ui").text
    assert "EventSource" in html
    assert "http://" not in html and "https://" not in html
    assert Path(REPO / "agentstream" / "web" / "index.html").read_text() == html


# --- the address and the tab remember the conversation ------------------------------------------


def wait_for_status(page: Any, status: str) -> dict[str, Any]:
    page.wait_for_function(f"document.getElementById('status').textContent === {status!r}")
    return page.evaluate("window.agentState")


@pytest.mark.slow
def test_a_reload_mid_stream_resumes_with_no_gap_and_no_repeat(app_url: str, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{app_url}/api/ui")
    ask(page, "Plan 5 days in Lisbon [[slow]]")
    page.wait_for_function("window.agentState.runText.includes('Day 2')")
    cid = page.evaluate("window.agentState.conversationId")
    assert f"conversation={cid}" in page.url and "agent=travelplanner" in page.url
    before = page.evaluate("window.agentState.applied")
    page.reload()
    after = wait_for_status(page, "completed")
    every_id = [event["id"] for event in Api(app_url).read_sse(cid, cursor="0")]
    # Read back up to where the tab was, then live from exactly there.
    assert after["applied"] == every_id
    # (Before the reload the page read live from the run's run.queued, its POST's cursor.)
    start = every_id.index(before[0])
    assert every_id[start : start + len(before)] == before
    assert after["liveFrom"] in every_id[start + len(before) - 1 : -1]
    assert after["opens"] == 1
    shown = page.inner_text(".assistant .answer")
    assert shown.count("Enjoy your trip!") == 1 and "Day 5" in shown
    context.close()


@pytest.mark.slow
def test_a_conversation_link_opens_it_with_its_history(app_url: str, browser: Any) -> None:
    api = Api(app_url)
    cid = api.start("Plan 3 days in Lisbon").json()["conversation_id"]
    api.read_run(cid)
    follow_up = api.http.post(
        f"/api/agents/travelplanner/conversations/{cid}/messages",
        json={"message": "What about something cheaper?"},
    )
    api.read_run(cid, cursor=follow_up.json()["cursor"])
    ARTIFACTS.mkdir(exist_ok=True)
    for name, width, height in (("desktop", 1280, 900), ("phone", 390, 844)):
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        page.goto(f"{app_url}/api/ui?conversation={cid}")
        wait_for_status(page, "completed")
        assert page.locator(".you").all_inner_texts() == [
            "Plan 3 days in Lisbon",
            "What about something cheaper?",
        ]
        answers = page.locator(".assistant .answer").all_inner_texts()
        assert "Enjoy your trip!" in answers[0] and "Earlier you asked" in answers[1]
        assert page.locator("details.tool").count() == 2  # the first turn's tool calls
        assert page.inner_text("#conversation") == cid
        page.screenshot(path=str(ARTIFACTS / f"browser-link-{name}.png"), full_page=True)
        context.close()

    # The link's conversation goes on from the page; New conversation resets everything.
    page = browser.new_page()
    page.goto(f"{app_url}/api/ui?agent=travelplanner&conversation={cid}")
    wait_for_status(page, "completed")
    ask(page, "And for a weekend?")
    # Not wait_for_status: the status still says the previous run's "completed" until the POST
    # answers, while the page has been sending since the click.
    assert answered(page)["lastType"] == "run.completed"
    assert page.evaluate("window.agentState.conversationId") == cid
    assert page.locator(".you").count() == 3
    page.click("#new")
    assert "conversation=" not in page.url
    assert [page.inner_text(f"#{name}") for name in ("conversation", "cursor", "connections")] == [
        "—",
        "—",
        "0",
    ]
    assert page.locator("#output > *").count() == 0
    page.close()


def test_a_link_to_an_unknown_conversation_says_it_is_gone(app_url: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{app_url}/api/ui?conversation={'0' * 32}")
    page.wait_for_selector(".note.info")
    assert "gone" in page.inner_text(".note.info")
    assert "conversation=" not in page.url
    assert page.evaluate("document.querySelector('link[rel=icon]').href").startswith(
        "data:image/png"
    )
    page.close()
