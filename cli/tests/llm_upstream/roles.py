"""Calls through loopwatch's metering proxy under roles, for the roles test:

- by the header: two chat completions as ``mutation`` and one Anthropic message as
  ``meta``, sent with ``X-Loopwatch-Role`` by plain urllib; one chat completion with a
  role that is not a role name (``two words``); one without a role; and a GET of
  ``/v1/models`` with the header (forwarded unmetered);
- by ``loopwatch.llm_role`` with the real SDKs: two chat completions as ``novelty``
  (openai, sync), then two asyncio tasks at once: ``judge`` (an Anthropic message,
  AsyncAnthropic) and ``novelty`` (a chat completion, AsyncOpenAI).

Every request is answered by the stand-in with its known usage."""

import asyncio
import json
import os
import urllib.request

import anthropic
import openai

import loopwatch

PROXY = os.environ["LOOPWATCH_LLM_PROXY"]
MESSAGES = [{"role": "user", "content": "write f"}]


def post(path, body, headers):
    request = urllib.request.Request(
        PROXY + path,
        data=json.dumps(body).encode(),
        headers=dict({"content-type": "application/json"}, **headers),
        method="POST",
    )
    with urllib.request.urlopen(request) as response:
        response.read()


def chat(role=None):
    headers = {"authorization": "Bearer sk-test"}
    if role is not None:
        headers["X-Loopwatch-Role"] = role
    post("/v1/chat/completions", {"model": "ok/chat", "messages": MESSAGES}, headers)


# By the header.
chat("mutation")
chat("mutation")
post(
    "/v1/messages",
    {"model": "ok/messages", "max_tokens": 64, "messages": MESSAGES},
    {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01", "x-loopwatch-role": "meta"},
)
chat("two words")
chat()
listing = urllib.request.Request(
    PROXY + "/v1/models", headers={"authorization": "Bearer sk-test", "X-Loopwatch-Role": "mutation"}
)
with urllib.request.urlopen(listing) as response:
    response.read()

# By the Python helper, with the real SDKs.
oa = openai.OpenAI(api_key="sk-test", max_retries=0)
with loopwatch.llm_role("novelty"):
    for _ in range(2):
        oa.chat.completions.create(model="ok/chat", messages=MESSAGES)


async def judged():
    client = anthropic.AsyncAnthropic(api_key="sk-ant-test", max_retries=0)
    with loopwatch.llm_role("judge"):
        await client.messages.create(model="ok/messages", max_tokens=64, messages=MESSAGES)


async def novel():
    client = openai.AsyncOpenAI(api_key="sk-test", max_retries=0)
    with loopwatch.llm_role("novelty"):
        await client.chat.completions.create(model="ok/chat", messages=MESSAGES)


async def both():
    await asyncio.gather(judged(), novel())


asyncio.run(both())
# Outside every block: no role.
oa.chat.completions.create(model="ok/chat", messages=MESSAGES)
