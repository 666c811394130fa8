"""Calls whose books are easy to get wrong, through loopwatch's metering proxy:
answers the loop never reads (only their status), answers larger than any buffer,
200s that are not JSON or come compressed, Responses API streams that end incomplete
or failed. Once loopwatch has booked every call (none in flight on its /metrics,
sys.argv[2]), writes what the loop saw to sys.argv[1] (JSON)."""

import gzip
import json
import os
import sys
import time
import urllib.request
from typing import Any, Dict, List

import openai

import loopwatch

PROXY = os.environ["LOOPWATCH_LLM_PROXY"]
METRICS = sys.argv[2]
MESSAGES = [{"role": "user", "content": "write f"}]
oa = openai.OpenAI(api_key="sk-test-secret", max_retries=0, timeout=120)
results: Dict[str, Any] = {}


def post(model: str) -> Any:
    """A chat request as a hand-written loop sends it."""
    request = urllib.request.Request(
        PROXY + "/v1/chat/completions",
        data=json.dumps({"model": model, "messages": MESSAGES}).encode(),
        method="POST",
        headers={"authorization": "Bearer sk-test-secret", "content-type": "application/json"},
    )
    return urllib.request.urlopen(request, timeout=120)


def events(model: str) -> List[str]:
    try:
        stream = oa.responses.create(model=model, input="f", max_output_tokens=64, stream=True)
        return [event.type for event in stream]
    except Exception as e:  # noqa: BLE001 - the test reads the failure
        return ["raised " + type(e).__name__]


with loopwatch.iteration() as it:
    # Only the status is read: each answer is dropped unread, its connection closed.
    results["status_only"] = [post("huge/chat").status for _ in range(3)]
    big = oa.embeddings.create(model="big/embed", input=["strategy"] * 700)
    results["big"] = [len(big.data), len(big.data[0].embedding)]
    with post("html/chat") as response:
        results["html"] = [response.status, response.read().decode()]
    with post("gzip/chat") as response:
        results["gzip"] = json.loads(gzip.decompress(response.read()))["usage"]
    results["incomplete"] = events("incomplete/responses")
    results["failed"] = events("failed/responses")
    it.success(1.0)

# Every call booked, the unread answers included: nothing in flight at loopwatch.
while "\nloopwatch_llm_in_flight 0\n" not in urllib.request.urlopen(METRICS).read().decode():
    time.sleep(0.05)
with open(sys.argv[1], "w") as f:
    json.dump(results, f)
loopwatch.done()
