"""A loop that stalls with four LLM calls in flight, for `--on-stall kill|restart`.

Its first start starts a worker that ignores SIGTERM (so that, once the loop's own
process has died of loopwatch's SIGTERM, the grace period still runs before the loop
is over), then four threads each waiting on a call the stand-in never answers; once
loopwatch counts the four calls in flight (its /metrics, sys.argv[1]), an iteration
that never ends. A later start (after `--on-stall restart`) waits until the four
calls of the first are booked, whatever their outcome, then says it is done and
exits 0. Until then each start reports an iteration every 50 ms from a thread of its
own: it stalls only where it is meant to, however slow the machine is to get there."""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import loopwatch

metrics = sys.argv[1]


def exposition() -> str:
    return urllib.request.urlopen(metrics).read().decode()


def hang_calls_booked() -> int:
    # The JSON snapshot, not /metrics: a scrape so late would have loopwatch wait, at
    # its end, for a scraper's next one.
    snapshot = json.load(urllib.request.urlopen(metrics.replace("/metrics", "/api/v1/snapshot")))
    calls = snapshot["summary"]["llm"]["by_model"].get("hang/chat", {}).get("calls", 0)
    assert isinstance(calls, int)
    return calls


still_setting_up = threading.Event()
still_setting_up.set()


def heartbeat() -> None:
    while still_setting_up.is_set():
        with loopwatch.iteration() as it:
            it.success(1.0)
        time.sleep(0.05)


beating = threading.Thread(target=heartbeat, daemon=True)
beating.start()


def stop_beating() -> None:
    still_setting_up.clear()
    beating.join()


if os.environ["LOOPWATCH_RESTARTS"] != "0":
    while hang_calls_booked() < 4:
        time.sleep(0.05)
    stop_beating()
    loopwatch.done()
    sys.exit(0)

worker = subprocess.Popen(
    [
        sys.executable,
        "-c",
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n",
    ],
    stdout=subprocess.PIPE,
)
assert worker.stdout is not None and worker.stdout.readline() == b"ready\n"

import openai  # only here: a later start has no need of it

oa = openai.OpenAI(api_key="sk-test-secret", max_retries=0, timeout=600)


def call() -> None:
    oa.chat.completions.create(model="hang/chat", messages=[{"role": "user", "content": "x"}])


threads = [threading.Thread(target=call, daemon=True) for _ in range(4)]
for thread in threads:
    thread.start()
while "\nloopwatch_llm_in_flight 4\n" not in exposition():
    time.sleep(0.05)
stop_beating()
with loopwatch.iteration() as it:
    for thread in threads:
        thread.join()
