"""An OpenEvolve-style loop with several LLM calls in flight at once: four threads,
each waiting on a call the stand-in never answers, until the loop is stopped. With
`done` as sys.argv[1], once loopwatch counts the four calls in flight (its /metrics,
sys.argv[2]) the loop says it is done and goes on waiting, for `--exit-timeout`; with
`crash`, it then dies at once (as a crash, the OOM killer or a Ctrl-C would end it)."""

import os
import sys
import threading
import time
import urllib.request

import openai

import loopwatch

oa = openai.OpenAI(api_key="sk-test-secret", max_retries=0, timeout=600)


def call() -> None:
    oa.chat.completions.create(model="hang/chat", messages=[{"role": "user", "content": "x"}])


with loopwatch.iteration() as it:
    threads = [threading.Thread(target=call, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    if sys.argv[1:2] in (["done"], ["crash"]):
        while "\nloopwatch_llm_in_flight 4\n" not in urllib.request.urlopen(sys.argv[2]).read().decode():
            time.sleep(0.05)
        it.success(1.0)
    if sys.argv[1:2] == ["crash"]:
        os._exit(3)
if sys.argv[1:2] == ["done"]:
    loopwatch.done()
for thread in threads:
    thread.join()
