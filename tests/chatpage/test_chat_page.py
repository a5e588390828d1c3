"""The chat page served at `/` by `rwkv-ggml serve`, in a real headless Chromium against a real server.

Every test gets a fresh browser context (its own localStorage), and checks at the end that the page wrote
no error to the browser console and threw nothing. The page counts its finished replies in
``document.body.dataset.replies``; the tests wait on that count instead of on the clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chatpage.conftest import API_KEY, Server

# Long enough that a reply is still streaming when the stop test clicks Stop; the default model writes
# about 300 tokens/s on one shared core, and the reply ends at the limit whatever it says.
LONG_REPLY_TOKENS = 4000
SHORT_REPLY_TOKENS = 60
STREAMED_REPLY_TOKENS = 1500

ASSISTANTS = '[data-testid="message"][data-role="assistant"]'
USERS = '[data-testid="message"][data-role="user"]'

# Records, for every change of the page while a reply streams (the Stop button shown), the length of the
# last assistant message: a reply streamed token by token is seen at several lengths before it ends.
RECORD_STREAM = """
window.__streamingLengths = [];
new MutationObserver(() => {
  const all = document.querySelectorAll('[data-testid="message"][data-role="assistant"] .body');
  const stop = document.querySelector('[data-testid="stop"]');
  if (all.length && stop && !stop.hidden) {
    window.__streamingLengths.push(all[all.length - 1].textContent.length);
  }
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""


class ChatPage:
    """A browser tab on the chat page, with what it wrote to the console."""

    def __init__(self, browser: Any, server: Server, record_stream: bool = False) -> None:
        self.context = browser.new_context(viewport={"width": 1100, "height": 760})
        self.page = self.context.new_page()
        self.server = server
        self.console_errors: list[str] = []
        self.urls: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.console_errors.append(f"uncaught: {e}"))
        self.page.on("request", lambda r: self.urls.append(r.url))
        if record_stream:
            self.page.add_init_script(RECORD_STREAM)
        self.page.set_default_timeout(60_000)

    def open(self) -> None:
        self.page.goto(self.server.url + "/")
        self.page.wait_for_selector('[data-testid="status"]')

    def testid(self, name: str) -> Any:
        return self.page.get_by_test_id(name)

    def replies_done(self) -> int:
        return int(self.page.evaluate("Number(document.body.dataset.replies || 0)"))

    def set_max_tokens(self, n: int) -> None:
        self.page.locator("#settings summary").click()
        self.testid("max-tokens").fill(str(n))
        self.page.locator("#settings summary").click()

    def send(self, text: str, *, wait: bool = True) -> None:
        before = self.replies_done()
        self.testid("message-input").fill(text)
        self.testid("message-input").press("Enter")
        if wait:
            self.wait_replies(before + 1)

    def wait_replies(self, n: int) -> None:
        self.page.wait_for_function(f"() => Number(document.body.dataset.replies || 0) >= {n}")

    def texts(self, selector: str) -> list[str]:
        return self.page.locator(f"{selector} .body").all_text_contents()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def chat(browser: Any, server: Server) -> Iterator[ChatPage]:
    page = ChatPage(browser, server, record_stream=True)
    page.open()
    page.set_max_tokens(SHORT_REPLY_TOKENS)
    yield page
    errors = page.console_errors
    page.close()
    assert errors == [], f"the browser console shows errors: {errors}"


def _number(text: str) -> float:
    return float(text.strip())


def test_page_is_served_with_its_script_and_stylesheet_from_the_server_only(chat: ChatPage) -> None:
    assert chat.page.title() == "rwkv-ggml chat"
    hosts = {url.split("/")[2] for url in chat.urls if url.startswith("http")}
    assert hosts == {f"127.0.0.1:{chat.server.port}"}
    loaded = {url.split("/", 3)[3] for url in chat.urls}
    assert {"", "static/app.js", "static/style.css"} <= loaded


def test_a_message_gets_a_streamed_reply_with_its_figures(chat: ChatPage) -> None:
    # long enough (a second or more) that the page paints it many times while it streams
    chat.set_max_tokens(STREAMED_REPLY_TOKENS)
    chat.send("Good morrow, what news?")
    assert chat.texts(USERS) == ["Good morrow, what news?"]
    reply = chat.texts(ASSISTANTS)
    assert len(reply) == 1 and reply[0].strip()
    partial = {n for n in chat.page.evaluate("window.__streamingLengths") if 0 < n < len(reply[0])}
    assert len(partial) >= 2, f"the reply was not seen growing while it streamed: {sorted(partial)}"
    assert _number(chat.testid("tokens-per-second").inner_text()) > 0
    assert 0 < _number(chat.testid("tokens-generated").inner_text()) <= STREAMED_REPLY_TOKENS
    assert chat.testid("error").is_hidden()
    status = chat.testid("status").inner_text()
    assert "running" in status and "unreachable" not in status


SET_HIDDEN = """hidden => {
  Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_the_status_line_stops_polling_while_the_tab_is_hidden(chat: ChatPage) -> None:
    chat.page.wait_for_function("() => document.getElementById('status').textContent.includes('running')")
    chat.page.evaluate(SET_HIDDEN, True)
    # the poll in flight (if any) ends without arming the next one
    chat.page.wait_for_function("() => healthTimer === null && !healthInFlight")
    with chat.page.expect_request(lambda r: r.url.endswith("/health")):
        chat.page.evaluate(SET_HIDDEN, False)
    chat.page.wait_for_function("() => healthTimer !== null")


def test_a_second_turn_reports_cached_prompt_tokens(chat: ChatPage, tmp_path: Path) -> None:
    chat.send("Who comes here?")
    chat.send("And wherefore?")
    assert len(chat.texts(USERS)) == 2 and len(chat.texts(ASSISTANTS)) == 2
    cached = chat.testid("cached-tokens").inner_text()
    assert cached != "–", "the server sent no usage.prompt_tokens_details.cached_tokens"
    # the whole first turn, the reply included, came from the state cache: more than its prompt
    first = json.loads(chat.page.evaluate("localStorage.getItem('rwkv-ggml.chat')"))["conversations"][0]
    first_prompt = first["messages"][1]["stats"]["promptTokens"]
    assert first_prompt < _number(cached) < _number(chat.testid("prompt-tokens").inner_text())
    shot = tmp_path / "chat-two-turns.png"
    chat.page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")


def test_stop_ends_the_stream_frees_the_slot_and_the_next_message_works(chat: ChatPage) -> None:
    chat.set_max_tokens(LONG_REPLY_TOKENS)
    chat.send("Speak on, and at length.", wait=False)
    chat.page.wait_for_function(
        f"() => {{ const a = document.querySelectorAll('{ASSISTANTS} .body');"
        " return a.length && a[a.length - 1].textContent.length > 20; }"
    )
    assert chat.testid("stop").is_visible()
    chat.testid("stop").click()
    chat.wait_replies(1)
    assert chat.testid("stop").is_hidden()
    stopped = chat.page.locator(ASSISTANTS).last
    assert stopped.locator(".note").inner_text() == "stopped"
    generated = _number(chat.testid("tokens-generated").inner_text())
    assert 0 < generated < LONG_REPLY_TOKENS
    chat.page.wait_for_function(
        "() => fetch('/health').then(r => r.json()).then(h => h.running === 0)", polling=200
    )
    chat.set_max_tokens(SHORT_REPLY_TOKENS)
    chat.send("Then a short word.")
    assert len(chat.texts(ASSISTANTS)) == 2
    assert chat.texts(ASSISTANTS)[1].strip()
    assert chat.testid("error").is_hidden()


def test_reload_keeps_the_conversation(chat: ChatPage) -> None:
    box = chat.testid("message-input")
    box.click()
    chat.page.keyboard.type("Remember me,")
    chat.page.keyboard.press("Shift+Enter")  # a new line, not a send
    chat.page.keyboard.type("and this line too.")
    assert chat.page.locator(USERS).count() == 0
    chat.page.keyboard.press("Enter")
    chat.wait_replies(1)
    assert chat.texts(USERS) == ["Remember me,\nand this line too."]
    before = (chat.texts(USERS), chat.texts(ASSISTANTS))
    figures = chat.testid("tokens-per-second").inner_text()
    chat.page.reload()
    chat.page.wait_for_selector(USERS)
    assert (chat.texts(USERS), chat.texts(ASSISTANTS)) == before
    assert chat.testid("tokens-per-second").inner_text() == figures


def test_regenerate_edit_and_new_conversation(chat: ChatPage) -> None:
    chat.send("First question.")
    chat.testid("regenerate").click()
    chat.wait_replies(2)
    assert chat.texts(USERS) == ["First question."] and len(chat.texts(ASSISTANTS)) == 1
    chat.send("Second question.")
    assert len(chat.texts(ASSISTANTS)) == 2
    # editing the first message drops everything after it and asks again
    chat.page.locator(USERS).first.get_by_test_id("edit").click()
    chat.testid("edit-input").fill("The first question, edited.")
    chat.testid("edit-send").click()
    chat.wait_replies(4)
    assert chat.texts(USERS) == ["The first question, edited."] and len(chat.texts(ASSISTANTS)) == 1
    chat.testid("new-chat").click()
    chat.testid("new-chat").click()  # a second click keeps the one empty conversation
    assert chat.page.locator('[data-testid="message"]').count() == 0
    assert chat.page.locator('[data-testid="conversations"] li').count() == 2
    chat.page.locator('[data-testid="conversations"] li .open').last.click()
    assert chat.texts(USERS) == ["The first question, edited."]


HOSTILE_USER = '<img src=x onerror="window.__ran = (window.__ran || 0) + 1"><b>bold?</b>'
HOSTILE_REPLY = (
    "<script>window.__ran = 99</script>\n"
    "**<img src=x onerror=window.__ran=7>**\n"
    "```\n<iframe src=javascript:window.__ran=5></iframe>\n```\n"
    "- <svg onload=window.__ran=3>"
)


def test_html_in_user_and_stored_assistant_messages_is_shown_as_text(browser: Any, server: Server) -> None:
    page = ChatPage(browser, server)
    stored = {
        "conversations": [
            {
                "id": "hostile",
                "title": "<b>title</b>",
                "messages": [
                    {"role": "user", "content": "hello"},
                    {"role": "assistant", "content": HOSTILE_REPLY, "stats": None},
                ],
            }
        ],
        "current": "hostile",
    }
    page.page.add_init_script(f"localStorage.setItem('rwkv-ggml.chat', {json.dumps(json.dumps(stored))});")
    page.open()
    page.set_max_tokens(SHORT_REPLY_TOKENS)
    page.send(HOSTILE_USER)
    messages = page.page.locator('[data-testid="messages"]')
    assert page.texts(USERS) == ["hello", HOSTILE_USER]
    shown = page.texts(ASSISTANTS)[0]
    for fragment in ("<script>window.__ran = 99</script>", "<img src=x onerror=window.__ran=7>", "<iframe"):
        assert fragment in shown
    assert "<svg onload=window.__ran=3>" in shown
    assert messages.locator("script, img, iframe, svg, b").count() == 0
    assert page.page.locator('[data-testid="conversations"] li .open').first.inner_text() == "<b>title</b>"
    assert page.page.evaluate("window.__ran") is None
    errors = page.console_errors
    page.close()
    assert errors == []


def test_malformed_stored_conversations_are_skipped_not_fatal(browser: Any, server: Server) -> None:
    page = ChatPage(browser, server)
    stored = {
        "conversations": [
            None,
            "text",
            {"id": 7, "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": 5}, None]},
        ],
        "current": 7,
    }
    page.page.add_init_script(f"localStorage.setItem('rwkv-ggml.chat', {json.dumps(json.dumps(stored))});")
    page.open()
    assert page.texts(USERS) == ["5"] and page.page.locator(ASSISTANTS).count() == 0
    page.set_max_tokens(SHORT_REPLY_TOKENS)
    page.send("Still works.")
    assert page.texts(USERS) == ["5", "Still works."]
    errors = page.console_errors
    page.close()
    assert errors == []


def test_json_schema_mode_gets_json_and_shows_the_servers_refusal_of_a_bad_schema(chat: ChatPage) -> None:
    # short enough that the constrained reply is complete well inside the token limit
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 12}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    chat.set_max_tokens(200)
    chat.page.locator("#settings summary").click()
    chat.testid("json-mode").check()
    chat.testid("json-schema").fill("{not json")
    chat.testid("message-input").fill("Answer in JSON.")
    chat.testid("send").click()
    assert "not valid JSON" in chat.testid("error").inner_text()
    assert chat.page.locator(USERS).count() == 0, "a schema that is not JSON is reported before sending"
    # a schema the server refuses: its 400 message is shown, and no empty reply is kept
    chat.testid("json-schema").fill('{"type": "no-such-type"}')
    chat.testid("send").click()
    chat.wait_replies(1)
    assert chat.testid("error").inner_text().startswith("400: response_format: ")
    assert chat.page.locator(ASSISTANTS).count() == 0
    chat.console_errors[:] = [e for e in chat.console_errors if "status of 400" not in e]
    chat.testid("json-schema").fill(json.dumps(schema))
    chat.testid("regenerate").click()
    chat.wait_replies(2)
    assert chat.testid("error").is_hidden()
    assert chat.page.locator(f"{ASSISTANTS} pre code").count() == 1, "a JSON reply is shown verbatim as code"
    reply = json.loads(chat.texts(ASSISTANTS)[0])
    assert set(reply) == {"answer"} and isinstance(reply["answer"], str) and len(reply["answer"]) <= 12


def test_api_key_is_asked_once_and_a_wrong_key_is_told_clearly(browser: Any, keyed_server: Server) -> None:
    page = ChatPage(browser, keyed_server)
    page.open()
    dialog = page.testid("api-key-dialog")
    dialog.wait_for(state="visible")
    page.testid("api-key-input").fill("not-the-key")
    page.testid("api-key-submit").click()
    error = page.testid("api-key-error")
    error.wait_for(state="visible")
    assert "rejected" in error.inner_text() and "401" in error.inner_text()
    assert dialog.is_visible()
    page.testid("api-key-input").fill(API_KEY)
    page.testid("api-key-submit").click()
    dialog.wait_for(state="hidden")
    page.set_max_tokens(SHORT_REPLY_TOKENS)
    page.send("Open, locks, whoever knocks.")
    assert page.texts(ASSISTANTS)[0].strip()
    assert page.testid("error").is_hidden()
    # asked once: a reload goes straight to the chat, with the key kept by the browser
    page.page.reload()
    page.page.wait_for_selector(USERS)
    page.page.wait_for_function("() => document.getElementById('status').textContent.includes('running')")
    assert dialog.is_hidden()
    assert all(API_KEY not in url for url in page.urls), "the API key appeared in a URL"
    # only the wrong key's answers may have reached the console
    errors = [e for e in page.console_errors if "status of 401" not in e]
    page.close()
    assert errors == []
