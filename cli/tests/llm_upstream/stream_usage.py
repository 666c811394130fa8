"""Streamed chat calls with and without `stream_options`, and a plain one, through
loopwatch's metering proxy; writes the text each stream carried and whether a chunk
carried usage to sys.argv[1] (JSON)."""

import json
import sys
from typing import Any, Dict

import openai

import loopwatch

oa = openai.OpenAI(api_key="sk-test-secret", max_retries=0, timeout=30)
MESSAGES = [{"role": "user", "content": "write f"}]
results: Dict[str, Any] = {}


def stream(model: str, **options: Any) -> Dict[str, Any]:
    text, usage = "", None
    for chunk in oa.chat.completions.create(model=model, messages=MESSAGES, stream=True, **options):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage.prompt_tokens
    return {"text": text, "usage": usage}


with loopwatch.iteration() as it:
    results["bare"] = stream("stream-asked/bare")
    results["declined"] = stream("stream-asked/declined", stream_options={"include_usage": False})
    results["options"] = stream("stream-asked/options", stream_options={})
    results["plain"] = oa.chat.completions.create(model="ok/chat", messages=MESSAGES).usage.prompt_tokens
    it.success(1.0)

with open(sys.argv[1], "w") as f:
    json.dump(results, f)
loopwatch.done()
