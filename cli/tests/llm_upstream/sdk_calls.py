"""Calls through loopwatch's metering proxy with the real openai and anthropic SDKs,
one per behaviour of the stand-in upstream; writes what the loop received to
sys.argv[1] (JSON) for the test to compare with what the upstream sent. sys.argv[2]
is loopwatch's /metrics: after giving up on the hung provider, the loop goes on until
loopwatch has booked that call (a loop that exits at once after giving up on a call
has that call booked as cut by its exit: abandoned)."""

import json
import sys
import time
import urllib.request
from typing import Any, Callable, Dict

import anthropic
import openai

import loopwatch

results: Dict[str, Any] = {}
oa = openai.OpenAI(api_key="sk-test-secret", max_retries=0, timeout=1.5)
an = anthropic.Anthropic(api_key="sk-ant-test-secret", max_retries=0, timeout=1.5)
MESSAGES = [{"role": "user", "content": "write f"}]


def attempt(name: str, call: Callable[[], Any]) -> None:
    try:
        results[name] = {"ok": True, "body": call()}
    except Exception as e:  # noqa: BLE001 - the test reads the failure
        results[name] = {"ok": False, "error": type(e).__name__, "status": getattr(e, "status_code", None)}


def text(response: Any) -> str:
    """A raw response's body as text (an attribute in one SDK, a method in another)."""
    body = response.text
    return str(body() if callable(body) else body)


def streamed(response: Any) -> Dict[str, Any]:
    """A streamed answer's bytes as they arrived, with their arrival times."""
    chunks, times = [], []
    for chunk in response.iter_bytes():
        chunks.append(chunk.decode())
        times.append(time.monotonic())
    return {"text": "".join(chunks), "spread": times[-1] - times[0] if times else 0.0}


def chat_stream(model: str) -> Dict[str, Any]:
    with oa.chat.completions.with_streaming_response.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as response:
        return streamed(response)


def messages_stream(model: str) -> Dict[str, Any]:
    with an.messages.with_streaming_response.create(
        model=model, max_tokens=64, messages=MESSAGES, stream=True
    ) as response:
        return streamed(response)


with loopwatch.iteration() as it:
    attempt("chat", lambda: text(oa.chat.completions.with_raw_response.create(model="ok/chat", messages=MESSAGES)))
    attempt("parsed", lambda: oa.chat.completions.create(model="ok/parsed", messages=MESSAGES).choices[0].message.content)
    attempt("completion", lambda: text(oa.completions.with_raw_response.create(model="ok/complete", prompt="f")))
    attempt("responses", lambda: text(oa.responses.with_raw_response.create(model="ok/responses", input="f")))
    attempt("embeddings", lambda: text(oa.embeddings.with_raw_response.create(model="ok/embed", input="f")))
    attempt("messages", lambda: text(an.messages.with_raw_response.create(model="ok/messages", max_tokens=64, messages=MESSAGES)))
    attempt("chat_stream", lambda: chat_stream("stream/chat"))
    attempt("messages_stream", lambda: messages_stream("stream/messages"))
    attempt("no_usage_stream", lambda: chat_stream("stream-no-usage/chat"))
    attempt("rate_limited", lambda: oa.chat.completions.create(model="rate-limited/chat", messages=MESSAGES))
    attempt("server_error", lambda: an.messages.create(model="server-error/messages", max_tokens=8, messages=MESSAGES))
    attempt("slow", lambda: text(oa.chat.completions.with_raw_response.create(model="slow/chat", messages=MESSAGES)))
    attempt("hang", lambda: oa.chat.completions.create(model="hang/chat", messages=MESSAGES))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
        'model="hang/chat"' in line and 'outcome="timeout"' in line
        for line in urllib.request.urlopen(sys.argv[2]).read().decode().splitlines()
    ):
        time.sleep(0.05)
    attempt("cut", lambda: chat_stream("cut/chat"))
    attempt("garbage_usage", lambda: text(oa.chat.completions.with_raw_response.create(model="garbage-usage/chat", messages=MESSAGES)))
    attempt("garbage", lambda: oa.chat.completions.create(model="garbage/chat", messages=MESSAGES))
    big = [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]
    attempt("oversized", lambda: len(text(oa.chat.completions.with_raw_response.create(model="ok/big", messages=big))))
    it.success(1.0)

with open(sys.argv[1], "w") as f:
    json.dump(results, f)
loopwatch.done()
