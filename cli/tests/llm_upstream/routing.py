"""Every kind of request the openai and anthropic SDKs make, through loopwatch's
metering proxy, each with its own provider's key; and requests the proxy cannot
place. Writes each call's outcome to sys.argv[1] (JSON) for the test, which asks the
two stand-in providers which keys reached them."""

import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, Optional

import anthropic
import openai

import loopwatch

results: Dict[str, Any] = {}
oa = openai.OpenAI(api_key="sk-openai-secret", max_retries=0, timeout=10)
# The installed anthropic SDK sends its key as `Authorization: Bearer` beside
# `anthropic-version`; the test checks that it did.
an = anthropic.Anthropic(api_key="sk-ant-secret", max_retries=0, timeout=10)
MESSAGES = [{"role": "user", "content": "write f"}]
PROXY = os.environ["LOOPWATCH_LLM_PROXY"]


def attempt(name: str, call: Callable[[], Any]) -> None:
    try:
        call()
        results[name] = {"ok": True}
    except Exception as e:  # noqa: BLE001 - the test reads the failure
        results[name] = {"ok": False, "error": type(e).__name__, "detail": str(e)}


def raw(name: str, method: str, path: str, headers: Dict[str, str], body: Optional[dict] = None) -> None:
    """A request as an older SDK or a hand-written client sends it."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(PROXY + path, data=data, method=method, headers=headers)
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            results[name] = {"ok": True, "status": response.status, "body": response.read().decode()}
    except urllib.error.HTTPError as e:
        results[name] = {
            "ok": False,
            "status": e.code,
            "body": e.read().decode(),
            "should_retry": e.headers.get("x-should-retry"),
        }


with loopwatch.iteration() as it:
    attempt("anthropic_messages", lambda: an.messages.create(model="ok/messages", max_tokens=8, messages=MESSAGES))
    attempt("anthropic_models", lambda: an.models.list())
    attempt("anthropic_count_tokens", lambda: an.messages.count_tokens(model="ok/messages", messages=MESSAGES))
    attempt(
        "anthropic_complete",
        lambda: an.post(
            "/v1/complete",
            body={"model": "ok/complete", "prompt": "\n\nHuman: f\n\nAssistant:", "max_tokens_to_sample": 8},
            cast_to=object,
        ),
    )
    attempt("anthropic_files", lambda: an.beta.files.list())
    attempt("anthropic_batches", lambda: an.messages.batches.list())
    attempt("openai_chat", lambda: oa.chat.completions.create(model="ok/chat", messages=MESSAGES))
    attempt("openai_models", lambda: oa.models.list())
    attempt("openai_files", lambda: oa.files.list())
    attempt("openai_batches", lambda: oa.batches.list())
    # Older anthropic SDKs: the key as x-api-key, with and without anthropic-version.
    raw(
        "x_api_key_messages",
        "POST",
        "/v1/messages",
        {"x-api-key": "sk-ant-secret", "anthropic-version": "2023-06-01"},
        {"model": "ok/messages", "max_tokens": 8, "messages": MESSAGES},
    )
    raw("x_api_key_models", "GET", "/v1/models", {"x-api-key": "sk-ant-secret"})
    # Requests the proxy cannot place: refused, forwarded nowhere.
    raw(
        "two_keys",
        "GET",
        "/v1/models",
        {"x-api-key": "sk-refused-one", "authorization": "Bearer sk-refused-two"},
    )
    raw("basic", "GET", "/v1/models", {"authorization": "Basic c2stcmVmdXNlZDp4"})
    raw(
        "azure_key",
        "POST",
        "/v1/chat/completions",
        {"api-key": "sk-refused-azure"},
        {"model": "ok/chat", "messages": MESSAGES},
    )
    it.success(1.0)

with open(sys.argv[1], "w") as f:
    json.dump(results, f)
loopwatch.done()
