"""``sentiment serve``: an HTTP API and a web page in front of a trained checkpoint, built on LitServe.

    sentiment serve --ckpt_path lightning_logs/version_0/checkpoints/best.ckpt [--host 127.0.0.1] [--port 8000]

- ``POST /predict`` with ``{"texts": ["...", ...]}`` answers ``{"predictions": [{"label": "positive",
  "score": 0.97}, ...]}`` in input order; ``"explain": true`` adds the weight of every word read.
  Requests arriving together are classified in one batch.
- ``GET /info`` describes the model (labels, max length, truncation, parameters, checkpoint file).
- ``GET /health`` answers ``ok`` once the model is loaded; ``GET /`` is a page to try reviews.
- With ``--api_key`` (or ``SENTIMENT_API_KEY``), ``/predict`` and ``/info`` need the ``X-API-Key`` header: 401
  without it. A request not answered within ``--timeout`` seconds gets 504.
- A body that is not valid JSON or not of that shape gets HTTP 400; too many texts, a text longer than
  the limit or a body too large gets 413; all with ``{"detail": "..."}``.

The checkpoint is read once, here; the model process receives the ``Predictor`` built from it. Nothing here
imports Lightning's training side or the command line module.
"""

import asyncio
import hmac
import http.client
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import litserve as ls
import torch
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, StrictBool, StrictStr

from sentiment.cpu import configure_cpu
from sentiment.errors import DataError
from sentiment.inference.predictor import Compute, Predictor

PAGE = Path(__file__).with_name("page.html")
KEYED_PATHS = ("/predict", "/info")  # what needs the key when there is one; the page and /health stay open
API_KEY_ENV = "SENTIMENT_API_KEY"


class PredictRequest(BaseModel):
    """The body of ``POST /predict``."""

    texts: list[StrictStr]
    explain: StrictBool = False


class SentimentAPI(ls.LitAPI):
    """Classifies the texts of requests that arrive together in one batch (in the model process)."""

    def __init__(self, predictor: Predictor, max_texts: int, max_text_bytes: int, threads: int,
                 max_batch_size: int, batch_timeout: float) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/predict")
        self.predictor, self.threads = predictor, threads  # the predictor travels to the model process with us
        self.max_texts, self.max_text_bytes = max_texts, max_text_bytes

    def setup(self, device: str) -> None:  # in LitServe's model process
        configure_cpu()
        torch.set_num_threads(self.threads)
        self.predictor.ready()

    def decode_request(self, request: PredictRequest) -> PredictRequest:
        if len(request.texts) > self.max_texts:
            raise HTTPException(413, f"too many texts: {len(request.texts)} (at most {self.max_texts} "
                                     "per request)")
        for i, text in enumerate(request.texts):
            if len(text.encode("utf-8", "replace")) > self.max_text_bytes:
                raise HTTPException(413, f"texts[{i}] is longer than {self.max_text_bytes} bytes")
        return request

    def batch(self, inputs: list[PredictRequest]) -> list[PredictRequest]:
        return inputs  # requests stay whole; predict flattens their texts into one batch

    def predict(self, requests: list[PredictRequest] | PredictRequest) -> Any:
        single = isinstance(requests, PredictRequest)
        requests = [requests] if single else requests
        # one batch for every text not to be explained; an explanation scores its text itself
        scored = iter(self.predictor.predict([t for r in requests if not r.explain for t in r.texts]))
        out = [[self.predictor.explain(t) for t in r.texts] if r.explain else [next(scored) for _ in r.texts]
               for r in requests]
        return out[0] if single else out

    def unbatch(self, output: list) -> list:
        return output

    def encode_response(self, output: list[dict]) -> dict:
        return {"predictions": output}


def build_server(predictor: Predictor, checkpoint_name: str, max_texts: int, max_text_bytes: int, threads: int,
                 max_batch_size: int, batch_timeout: float, api_key: str | None = None, timeout: float = 30.0):
    """The LitServer for one model (not started): the API, the page, ``/info``, JSON errors for bad bodies, the
    key check and the time limit."""
    api = SentimentAPI(predictor, max_texts, max_text_bytes, threads, max_batch_size, batch_timeout)
    # the whole body: every text at its limit, JSON escaping (up to 6 bytes a character) aside
    max_payload = max_texts * (max_text_bytes + 64) + 4096
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, max_payload_size=max_payload,
                          timeout=timeout)
    app = server.app

    async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if content_type and "json" not in content_type:
            return JSONResponse({"detail": f"the body must be JSON (Content-Type: application/json), "
                                           f"not {content_type.split(';')[0]}"}, status_code=400)
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return JSONResponse({"detail": f"the body is not valid JSON ({first.get('ctx', {}).get('error', '?')})"},
                                status_code=400)
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        detail = (f"{where}: {first.get('msg', 'invalid')}; expected "
                  '{"texts": ["a review", ...], "explain": false}')
        return JSONResponse({"detail": detail}, status_code=400)

    app.add_exception_handler(RequestValidationError, bad_body)
    key = api_key.encode() if api_key else None

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if key is not None and request.url.path in KEYED_PATHS and not hmac.compare_digest(
                request.headers.get("x-api-key", "").encode(), key):
            return JSONResponse({"detail": "this server needs an API key: send it in the X-API-Key header"},
                                status_code=401)
        if request.url.path != "/predict":
            return await call_next(request)
        try:  # LitServe drops requests that waited too long in its queue, but not one whose batch never ends
            return await asyncio.wait_for(call_next(request), timeout)
        except asyncio.TimeoutError:
            return JSONResponse({"detail": f"no answer within {timeout:g} s (--timeout)"}, status_code=504)

    info = {"labels": list(predictor.labels), "max_length": predictor.encoder.max_length,
            "truncation": predictor.encoder.truncation,
            "parameters": sum(p.numel() for p in predictor.net.parameters()), "checkpoint": checkpoint_name,
            "ngrams": len(predictor.encoder.ngrams) if predictor.encoder.ngrams is not None else 0,
            "compute": predictor.kernel}
    page = PAGE.read_text(encoding="utf-8")
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) not in ("/", "/info")]  # LitServe's
    app.add_api_route("/info", lambda: info, methods=["GET"])
    app.add_api_route("/", lambda: HTMLResponse(page), methods=["GET"], include_in_schema=False)
    return server


def serve(ckpt_path: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          timeout: float = 30.0, max_texts: int = 64, max_text_bytes: int = 100_000, max_batch_size: int = 64,
          batch_timeout: float = 0.002, threads: int = 1, compute: Compute | None = None) -> None:
    """Serve a trained checkpoint over HTTP: POST /predict, GET /info, GET /health and a page at GET /.

    Args:
        ckpt_path: a checkpoint written by ``sentiment fit`` (e.g. lightning_logs/version_0/checkpoints/best.ckpt).
        host: address to listen on; the default answers this machine only (0.0.0.0 for every interface).
        port: TCP port.
        api_key: require this key in the X-API-Key header of /predict and /info (default: the
            SENTIMENT_API_KEY environment variable; none: anyone who reaches the port may use the model).
        timeout: seconds a request may wait for its answer before it gets HTTP 504.
        max_texts: most texts in one request (more: HTTP 413).
        max_text_bytes: most UTF-8 bytes in one text (more: HTTP 413).
        max_batch_size: most requests classified together in one batch.
        batch_timeout: seconds to wait for more requests to fill a batch.
        threads: torch threads of the model process (the HTTP process needs a core too).
        compute: ``bfloat16``, ``float32`` (through per-word gate tables where the network allows) or
            ``float32-plain`` (PyTorch's own LSTM kernel); default: ``bfloat16`` where the CPU computes in it
            natively, else ``float32``. ``/info`` says which runs.
    """
    least = {"timeout": (timeout, 0.001), "max_texts": (max_texts, 1), "max_text_bytes": (max_text_bytes, 1),
             "max_batch_size": (max_batch_size, 1), "batch_timeout": (batch_timeout, 0), "threads": (threads, 1)}
    for name, (value, bound) in least.items():
        if value < bound:
            raise DataError(f"--{name} must be at least {bound:g}, got {value:g}")
    if batch_timeout >= timeout:
        raise DataError(f"--batch_timeout ({batch_timeout:g} s) must be shorter than --timeout ({timeout:g} s)")
    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    # a bad file: one line here, before any process
    predictor = Predictor.from_checkpoint(ckpt_path, threads=threads, compute=compute)
    server = build_server(predictor, Path(ckpt_path).name, max_texts, max_text_bytes, threads, max_batch_size,
                          batch_timeout, api_key, timeout)
    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, `kill`, systemd, docker stop: a clean shutdown
        signal.signal(signum, _stop)
    if api_key is None and not _loopback(host):
        print(f"warning: serving on {host} without --api_key: anyone who can reach port {port} can use the model",
              file=sys.stderr, flush=True)
    print(f"Serving {ckpt_path} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    server.run(host=host, port=port, generate_client_file=False, log_level="warning")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def start_server(ckpt_path: str | os.PathLike, *options: str, timeout: float = 120.0,
                 **popen: Any) -> tuple[subprocess.Popen, int]:
    """Start ``sentiment serve`` on a free loopback port in a child process; return it and the port once
    ``/health`` answers (for scripts, benchmarks and tests). Stop it with SIGINT or SIGTERM."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, **popen}
    process = subprocess.Popen([sys.executable, "-m", "sentiment", "serve", "--ckpt_path", str(ckpt_path),
                                "--port", str(port), *options], **popen)
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return process, port
        except OSError:
            pass
        finally:
            conn.close()
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output = process.communicate()[0] if popen["stdout"] == subprocess.PIPE else ""
            raise RuntimeError(f"sentiment serve did not start:\n{(output or '')[-3000:]}")
        time.sleep(0.2)


_MAIN_PID = os.getpid()  # the process that imports this module runs serve(); LitServe forks the HTTP server


def _stop(signum: int, frame: Any) -> None:
    if os.getpid() == _MAIN_PID:
        raise KeyboardInterrupt  # LitServe stops its model process and HTTP server on KeyboardInterrupt
    raise SystemExit(0)  # a forked child (the HTTP server) that LitServe itself is stopping
