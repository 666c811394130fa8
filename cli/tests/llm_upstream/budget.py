"""A loop spending an LLM budget through the metering proxy with the real SDKs, their
retries left at the SDKs' defaults. Each mode writes what the loop saw to
`outcomes.json` (written whole, then renamed).

- `parallel WORKERS METRICS`: WORKERS threads call `held/chat` (answered once the
  test releases the stand-in, so that the calls overlap) one call after another until
  the proxy refuses one for good (a deferral the SDK still raised after its retries is written down and
  the worker goes on); then one Anthropic message (refused too). Then the loop reads loopwatch's
  /metrics (METRICS), runs two more iterations and says it is done.
- `restarted FIRST`: the first start (LOOPWATCH_RESTARTS 0) makes FIRST `ok/chat`
  calls, one iteration each, and exits 1; a later start calls `ok/chat` until
  loopwatch stops it.
- `streamed`: one streamed `stream-asked/chat` call (its stream carries usage only
  when asked for it), then streamed `stream-no-usage/chat` calls (never with usage)
  one after another until the proxy refuses one (at most 50); then, the budget
  spent, the list of stored chat completions (a GET of the chat path).
- `sequential CALLS METRICS`: CALLS `ok/chat` calls, one iteration each; then the
  loop saves loopwatch's page (METRICS without `/metrics`) to `page.html` and says it
  is done.
"""

import json
import os
import sys
import threading
import urllib.request

import anthropic
import openai

import loopwatch

oa = openai.OpenAI(api_key="sk-test", timeout=30)
an = anthropic.Anthropic(api_key="sk-ant-test", timeout=30)


def refusal(error: Exception) -> dict:
    """What the SDK raised, as the loop's code sees it."""
    return {
        "error": type(error).__name__,
        "status": getattr(error, "status_code", None),
        "code": getattr(error, "code", None),
        "type": getattr(error, "type", None),
        "body": getattr(error, "body", None),
        "message": str(error),
    }


def chat(model: str) -> dict:
    try:
        oa.chat.completions.create(
            model=model, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
        return {"ok": True}
    except openai.APIError as e:
        return refusal(e)


def streamed(model: str) -> dict:
    try:
        stream = oa.chat.completions.create(
            model=model,
            max_tokens=10,
            messages=[{"role": "user", "content": "x"}],
            stream=True,
        )
        for _ in stream:
            pass
        return {"ok": True}
    except openai.APIError as e:
        return refusal(e)


def write(outcomes) -> None:
    with open("outcomes.json.tmp", "w") as f:
        json.dump(outcomes, f)
    os.replace("outcomes.json.tmp", "outcomes.json")


def read(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read().decode()


mode = sys.argv[1]
if mode == "parallel":
    workers, metrics = int(sys.argv[2]), sys.argv[3]
    lock = threading.Lock()
    calls = {"chat": [], "messages": None, "metrics": None}

    def worker() -> None:
        # Bounded, so that a budget that never refuses fails the test, not hangs it.
        for _ in range(100):
            result = chat("held/chat")
            with lock:
                calls["chat"].append(result)
            if not result.get("ok") and result.get("code") != "rate_limit_exceeded":
                return

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        an.messages.create(
            model="ok/messages", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
        calls["messages"] = {"ok": True}
    except anthropic.APIError as e:
        calls["messages"] = refusal(e)
    calls["metrics"] = read(metrics)
    # The loop goes on after the refusals, and loopwatch with it.
    for _ in range(2):
        with loopwatch.iteration() as it:
            it.success(1.0)
    write(calls)
    loopwatch.done()
elif mode == "restarted":
    first = int(sys.argv[2])
    if os.environ.get("LOOPWATCH_RESTARTS", "0") == "0":
        for _ in range(first):
            with loopwatch.iteration() as it:
                result = chat("ok/chat")
                it.success(1.0) if result.get("ok") else it.failure(result["error"])
        loopwatch.flush(5)
        sys.exit(1)
    while True:
        with loopwatch.iteration() as it:
            result = chat("ok/chat")
            it.success(1.0) if result.get("ok") else it.failure(result["error"])
elif mode == "streamed":
    outcomes = {"asked": streamed("stream-asked/chat"), "without": []}
    for _ in range(50):
        result = streamed("stream-no-usage/chat")
        outcomes["without"].append(result)
        if not result.get("ok"):
            break
    try:
        oa.chat.completions.list()
        outcomes["stored"] = {"ok": True}
    except openai.APIError as e:
        outcomes["stored"] = refusal(e)
    write(outcomes)
    loopwatch.done()
elif mode == "sequential":
    count, metrics = int(sys.argv[2]), sys.argv[3]
    outcomes = []
    for _ in range(count):
        with loopwatch.iteration() as it:
            result = chat("ok/chat")
            outcomes.append(result)
            it.success(1.0) if result.get("ok") else it.failure(result["error"])
    loopwatch.flush(5)
    page = read(metrics[: -len("/metrics")] + "/")
    with open("page.html", "w") as f:
        f.write(page)
    write(outcomes)
    loopwatch.done()
