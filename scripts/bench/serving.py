"""`sentiment serve` under load from concurrent keep-alive clients on loopback."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import Report
from sentiment.inference.serve import start_server


KEY = "benchmark-key"  # served as a server facing a network would be: behind a key


def _load(port: int, texts: list[str], requests: int, clients: int) -> tuple[float, list[float], int]:
    """``requests`` single-review POST /predict calls from ``clients`` keep-alive connections at once."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    queue = iter(range(requests))

    def client() -> None:
        nonlocal failures
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                i = next(queue, None)
            if i is None:
                break
            body = json.dumps({"texts": [texts[i % len(texts)]]})
            start = time.perf_counter()
            try:
                conn.request("POST", "/predict", body, {"Content-Type": "application/json", "X-API-Key": KEY})
                response = conn.getresponse()
                ok = response.status == 200 and len(json.loads(response.read())["predictions"]) == 1
            except (OSError, http.client.HTTPException, ValueError):
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with lock:
                latencies.append(time.perf_counter() - start)
                failures += not ok

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies, failures


def bench_serve(texts: list[str], ckpt: Path, report: Report, requests: int, clients: int = 16) -> None:
    server, port = start_server(ckpt, "--api_key", KEY, cwd=ckpt.parent, stdout=subprocess.DEVNULL)
    try:
        _load(port, texts, min(200, requests), clients)  # warm up
        elapsed, latencies, failures = _load(port, texts, requests, clients)
    finally:
        server.terminate()
        server.wait(timeout=60)
    ms = np.percentile(latencies, [50, 99]) * 1000
    report.add(f"`sentiment serve --api_key`, {requests:,} single-review requests from {clients} clients (loopback)",
               f"p50 {ms[0]:.1f} ms, p99 {ms[1]:.1f} ms", "p99 < 50 ms, no failure",
               f"{requests / elapsed:,.0f} requests/s, {failures} failed")
