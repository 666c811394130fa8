"""An OpenEvolve-style loop with several LLM calls in flight at once: four threads,
each waiting on a call the stand-in never answers, until the loop is stopped."""

import threading

import openai

import loopwatch

oa = openai.OpenAI(api_key="sk-test-secret", max_retries=0, timeout=600)


def call() -> None:
    oa.chat.completions.create(model="hang/chat", messages=[{"role": "user", "content": "x"}])


with loopwatch.iteration() as it:
    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    it.success(1.0)
