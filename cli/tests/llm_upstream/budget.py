"""A loop spending an LLM budget through the metering proxy with the real SDKs, their
retries left at the SDKs' defaults.

- `sequential N`: N chat calls one after another (each `max_tokens=10`), then one
  Anthropic message; each outcome written to `outcomes.json` as it happens.
- `parallel N METRICS`: N chat calls at once to a model the stand-in never answers;
  once every call has either come back refused or is counted in flight by loopwatch
  (its /metrics, METRICS), the outcomes are written and the loop exits, leaving the
  calls in flight.
- `forever`: chat calls until loopwatch stops the loop.
"""

import json
import os
import re
import sys
import threading
import time
import urllib.request

import anthropic
import openai

import loopwatch

oa = openai.OpenAI(api_key="sk-test", timeout=30)
an = anthropic.Anthropic(api_key="sk-ant-test", timeout=30)
outcomes = []


def outcome(error: Exception) -> dict:
    body = getattr(error, "body", None)
    return {
        "error": type(error).__name__,
        "status": getattr(error, "status_code", None),
        "code": getattr(error, "code", None),
        "type": getattr(error, "type", None),
        "body": body,
        "message": str(error),
    }


def chat(model: str) -> dict:
    try:
        oa.chat.completions.create(
            model=model, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
        return {"ok": True}
    except openai.APIError as e:
        return outcome(e)


def write() -> None:
    with open("outcomes.json.tmp", "w") as f:
        json.dump(outcomes, f)
    os.replace("outcomes.json.tmp", "outcomes.json")


mode = sys.argv[1]
if mode == "sequential":
    for i in range(int(sys.argv[2])):
        with loopwatch.iteration() as it:
            result = chat("ok/chat")
            outcomes.append(result)
            if result.get("ok"):
                it.success(1.0)
            else:
                it.failure(result["error"])
    try:
        an.messages.create(
            model="ok/messages", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
        outcomes.append({"ok": True})
    except anthropic.APIError as e:
        outcomes.append(outcome(e))
    write()
    loopwatch.done()
elif mode == "parallel":
    calls = int(sys.argv[2])
    lock = threading.Lock()

    def call() -> None:
        result = chat("hang/chat")
        with lock:
            outcomes.append(result)

    for _ in range(calls):
        threading.Thread(target=call, daemon=True).start()
    # The calls admitted hang; those refused come back. Wait until each is one or
    # the other: the budget decides how many of each, not the timing.
    pattern = re.compile(r"^loopwatch_llm_in_flight (\d+)", re.M)
    while True:
        text = urllib.request.urlopen(sys.argv[3]).read().decode()
        found = pattern.search(text)
        in_flight = int(found.group(1)) if found else 0
        with lock:
            if len(outcomes) + in_flight == calls:
                write()
                break
        time.sleep(0.05)
    loopwatch.done()
    os._exit(0)
elif mode == "forever":
    while True:
        with loopwatch.iteration() as it:
            result = chat("ok/chat")
            if result.get("ok"):
                it.success(1.0)
            else:
                it.failure(result["error"])
