"""`sentiment serve` in a subprocess on a free loopback port: every endpoint, every error, and the page in Chromium."""

import base64
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from sentiment.cpu import native_bfloat16
from sentiment.inference.serve import start_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


class Client:
    def __init__(self, port: int, key: str | None = None) -> None:
        self.port, self.key = port, key

    def request(self, method: str, path: str, body: bytes | str | None = None,
                content_type: str = "application/json") -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": content_type} if body is not None else {}
        if self.key is not None:
            headers["X-API-Key"] = self.key
        try:
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            return response.status, response.getheader("Content-Type", ""), response.read()
        finally:
            conn.close()

    def predict(self, payload) -> tuple[int, dict]:
        status, _, body = self.request("POST", "/predict", json.dumps(payload))
        return status, json.loads(body)


def serve(ckpt: Path, *options: str, **popen) -> tuple[subprocess.Popen, Client]:
    try:
        process, port = start_server(ckpt, *options, **popen)
    except RuntimeError as e:
        pytest.fail(str(e))
    return process, Client(port)


def stop(process: subprocess.Popen) -> str:
    """Ctrl-C the server; what it printed."""
    process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=30)[0] or ""
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[0] or ""


def children(pid: int) -> set[int]:
    """Every process started by ``pid``, however deep."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                child = int(stat.parent.name)
                found.add(child)
                todo.append(child)
    return found


@pytest.fixture(scope="module")
def server(trained):
    """The tiny model served with small limits (2 texts, 200 bytes each) so the limit cases stay cheap."""
    process, client = serve(trained["best"], "--max_texts", "2", "--max_text_bytes", "200")
    yield client
    stop(process)


@pytest.fixture(scope="module")
def keyed(three):
    """The tiny three-class model (negative / neutral / positive) behind a key (from the environment) and a
    5-second time limit: short for the time-limit test, long enough that the page's requests on a busy host
    (with explanations, beside a starting browser) never meet it."""
    process, client = serve(three["best"], "--timeout", "5", env={**os.environ, "SENTIMENT_API_KEY": "s3cret"})
    client.key = "s3cret"
    yield process, client
    stop(process)


def test_health_answers_ok(server):
    assert server.request("GET", "/health")[::2] == (200, b"ok")


def test_predict_answers_in_input_order(server):
    status, body = server.predict({"texts": ["brilliant superb wonderful fun", "awful boring dull waste"]})
    assert status == 200
    assert [p["label"] for p in body["predictions"]] == ["positive", "negative"]
    positive = [p["scores"]["positive"] for p in body["predictions"]]
    assert positive[0] > 0.5 > positive[1]
    assert [p["score"] for p in body["predictions"]] == pytest.approx([positive[0], 1 - positive[1]])
    assert server.predict({"texts": []}) == (200, {"predictions": []})


def test_explain_weighs_every_word_read(server):
    status, body = server.predict({"texts": ["the plot was awful and dull"], "explain": True})
    answer = body["predictions"][0]
    assert status == 200 and answer["label"] == "negative"
    # the bag of n-grams weighs every word; the recurrent part's own weights are occlusion scores (mean_max pooling)
    assert answer["method"] == "ngrams" and answer["read"]["method"] == "occlusion"
    for words in (answer["words"], answer["read"]["words"]):
        assert [w["word"] for w in words] == ["the", "plot", "was", "awful", "and", "dull"]
    assert sum(w["weight"] for w in answer["words"]) == pytest.approx(answer["bag_logit"], abs=1e-4)
    weights = {w["word"]: w["weight"] for w in answer["words"]}
    assert weights["awful"] > 0 and weights["awful"] > weights["the"]  # the bag's "awful" speaks for "negative"


def test_concurrent_requests_are_batched_yet_each_gets_its_own_answers(server):
    results = {}

    def send(i):
        texts = ["superb brilliant fun"] * (i % 2 + 1) if i % 3 else ["awful dull waste"]
        results[i] = (texts, server.predict({"texts": texts}))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for texts, (status, body) in results.values():
        assert status == 200 and len(body["predictions"]) == len(texts)
        expected = "negative" if texts[0].startswith("awful") else "positive"
        assert {p["label"] for p in body["predictions"]} == {expected}


@pytest.mark.parametrize("body, content_type, status, detail", [
    ("not json", "application/json", 400, "not valid JSON"),
    ('{"texts": "one review"}', "application/json", 400, "texts: Input should be a valid list"),
    ('{"texts": [1]}', "application/json", 400, "texts.0: Input should be a valid string"),
    ("{}", "application/json", 400, "texts: Field required"),
    ('{"texts": ["ok"], "explain": "yes"}', "application/json", 400, "explain: Input should be a valid boolean"),
    ("texts=ok", "application/x-www-form-urlencoded", 400, "the body must be JSON"),
    ('{"texts": ["a", "b", "c"]}', "application/json", 413, "too many texts: 3 (at most 2 per request)"),
    (json.dumps({"texts": ["x" * 201]}), "application/json", 413, "texts[0] is longer than 200 bytes"),
    (json.dumps({"texts": ["x" * 5000] * 2}), "application/json", 413, "Payload too large"),
], ids=["invalid json", "texts not a list", "not a string", "no texts", "explain not a bool", "a form",
        "too many texts", "a text too long", "a body too large"])
def test_bad_requests_get_400_or_413_with_a_json_error(server, body, content_type, status, detail):
    got, kind, raw = server.request("POST", "/predict", body, content_type)
    assert (got, kind) == (status, "application/json")
    assert detail in json.loads(raw)["detail"]


def test_the_server_still_answers_after_bad_requests(server):
    server.request("POST", "/predict", "not json")
    assert server.predict({"texts": ["superb"]})[0] == 200


def test_the_page_is_self_contained(server):
    status, kind, raw = server.request("GET", "/")
    page = raw.decode()
    assert status == 200 and kind.startswith("text/html")
    assert '<textarea id="review"' in page and '<button id="classify"' in page
    assert "http://" not in page and "https://" not in page and "src=" not in page  # nothing from elsewhere
    assert server.request("GET", "/nothing-here")[0] == 404


@pytest.mark.slow
@pytest.mark.parametrize("signum, host", [(signal.SIGTERM, "0.0.0.0"), (signal.SIGINT, "127.0.0.1")],
                         ids=["SIGTERM, every interface", "Ctrl-C, loopback"])
def test_a_stop_signal_ends_the_server_and_every_process_it_started(trained, signum, host):
    process, client = serve(trained["best"], "--host", host)
    started = children(process.pid)
    assert started  # the HTTP server and the model process
    assert client.request("GET", "/health")[0] == 200
    process.send_signal(signum)
    assert process.wait(timeout=60) == 0
    output = process.stdout.read()
    assert "Traceback" not in output, output[-3000:]
    # beyond loopback without a key, start-up said so in one line
    assert [line for line in output.splitlines() if line.startswith("warning:")] == [
        f"warning: serving on {host} without --api_key: anyone who can reach port {client.port} can use the model"
    ] * (host != "127.0.0.1")
    deadline = time.monotonic() + 10
    while started & {int(p.name) for p in Path("/proc").glob("[0-9]*")} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not started & {int(p.name) for p in Path("/proc").glob("[0-9]*")}


def test_info_describes_the_model(server, trained):
    status, content_type, body = server.request("GET", "/info")
    assert status == 200 and content_type == "application/json"
    checkpoint = torch.load(trained["best"], weights_only=True)
    weights, ngrams = checkpoint["state_dict"], checkpoint["text_encoder"]["ngrams"]
    assert json.loads(body) == {
        "labels": ["negative", "positive"], "max_length": 128, "truncation": "head_tail", "checkpoint": "best.ckpt",
        # the bag's log-count ratios are data, not parameters
        "parameters": sum(w.numel() for k, w in weights.items() if k.startswith("net.") and not k.endswith(".scale")),
        "ngrams": len(base64.b64decode(ngrams["hashes"])) // 8,
        # the CPU's own choice: bfloat16 where it has it natively, else float32 through the gate tables
        "compute": "bfloat16, PyTorch's LSTM" if native_bfloat16() else
                   "float32, gate tables (batches of 8 or more; fewer: PyTorch's LSTM)"}


def test_an_api_key_guards_predict_and_info_but_not_health_or_the_page(keyed):
    _, client = keyed
    for key in (None, "wrong", "s3cre"):
        stranger = Client(client.port, key)
        for method, path, body in (("POST", "/predict", '{"texts": ["superb"]}'), ("GET", "/info", None)):
            status, content_type, answer = stranger.request(method, path, body)
            assert (status, content_type) == (401, "application/json"), (key, path)
            assert "X-API-Key" in json.loads(answer)["detail"]
        assert stranger.request("GET", "/health")[::2] == (200, b"ok")
        assert stranger.request("GET", "/")[0] == 200  # the page asks for the key itself
    status, answer = client.predict({"texts": ["brilliant superb fun", "awful dull waste"]})
    assert status == 200 and [p["label"] for p in answer["predictions"]] == ["positive", "negative"]
    assert client.request("GET", "/info")[0] == 200


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_request_not_answered_in_time_gets_504_and_the_server_recovers(keyed):
    process, client = keyed
    (model,) = [pid for pid in children(process.pid) if "spawn_main" in _cmdline(pid)]  # LitServe's model process
    os.kill(model, signal.SIGSTOP)  # a model that hangs
    try:
        start = time.monotonic()
        status, answer = client.predict({"texts": ["superb"]})
        waited = time.monotonic() - start
    finally:
        os.kill(model, signal.SIGCONT)
    assert (status, answer) == (504, {"detail": "no answer within 5 s (--timeout)"})
    assert 5 <= waited < 15
    status, answer = client.predict({"texts": ["awful dull waste"]})
    assert status == 200 and answer["predictions"][0]["label"] == "negative"


def test_serve_refuses_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    (tmp_path / "bad.ckpt").write_text("not a checkpoint")
    assert run_cli("serve", "--ckpt_path", str(tmp_path / "bad.ckpt")) == 1
    assert capsys.readouterr().err.strip().startswith(f"error: {tmp_path / 'bad.ckpt'}: not a PyTorch checkpoint")


@pytest.mark.parametrize("option, value", [("--max_texts", "0"), ("--max_text_bytes", "0"), ("--max_batch_size", "0"),
                                           ("--batch_timeout", "-1"), ("--threads", "0")])
def test_serve_refuses_a_limit_out_of_range_in_one_line(trained, capsys, option, value):
    assert run_cli("serve", "--ckpt_path", str(trained["best"]), option, value) == 1
    bound = 0 if option == "--batch_timeout" else 1
    assert capsys.readouterr().err == f"error: {option} must be at least {bound}, got {value}\n"


def test_a_batch_mixing_explained_and_plain_requests_answers_each_in_its_own_shape(trained):
    # requests that arrive together are classified in one batch; those asking for explanations are answered
    # with them, the others without, each with the scores its texts get alone
    from sentiment.training.classifier import SentimentClassifier
    from sentiment.inference.predictor import Predictor
    from sentiment.inference.serve import PredictRequest, SentimentAPI

    api = SentimentAPI(Predictor.from_checkpoint(trained["best"]), max_texts=8, max_text_bytes=1000, threads=1,
                       max_batch_size=8, batch_timeout=0.0)
    api.setup("cpu")
    requests = [PredictRequest(texts=["brilliant superb fun", "awful"]),
                PredictRequest(texts=["dull waste of time"], explain=True),
                PredictRequest(texts=["superb"]),
                PredictRequest(texts=["fun brilliant", "awful dull"], explain=True)]
    answers = api.predict(requests)
    model = SentimentClassifier.load_from_checkpoint(trained["best"], map_location="cpu")
    assert [len(a) for a in answers] == [len(r.texts) for r in requests]
    for request, answer in zip(requests, answers):
        for text, got in zip(request.texts, answer):
            assert ("words" in got) == request.explain
            alone = model.predict([text])[0]
            assert got["label"] == alone["label"] and got["score"] == pytest.approx(alone["score"], abs=1e-5)
    assert [w["word"] for w in answers[3][1]["words"]] == ["awful", "dull"]


def test_serve_help_names_every_option():
    out = subprocess.run([sys.executable, "-m", "sentiment", "serve", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for option in ("--ckpt_path", "--host", "--port", "--max_texts", "--max_text_bytes", "--max_batch_size"):
        assert option in out


needs_browser = pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("SENTIMENT_REQUIRE_BROWSER"),
                                   reason="Debian's chromium is not installed (.ci/run installs it)")


@contextlib.contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            yield browser
        finally:
            browser.close()


def wait_for_verdict(page, label: str) -> None:
    """Wait for the page to show ``label``; if it does not, fail with what it shows instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_selector(f"#verdict[data-label={label}]", timeout=15_000)
    except PlaywrightTimeout:
        pytest.fail(f"no {label} verdict: the page shows {page.inner_text('#verdict')!r}, "
                    f"error {page.inner_text('#error')!r}")


@needs_browser
def test_the_page_asks_for_the_key_of_a_keyed_server_then_shows_a_bar_for_each_of_three_classes(keyed):
    _, client = keyed
    expected = client.predict({"texts": ["An okay, average film."]})[1]["predictions"][0]
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{client.port}/")
        page.wait_for_selector("#keyrow:not([hidden])", timeout=15_000)  # /info said 401: the key field shows
        page.fill("#key", "wrong")
        page.fill("#review", "Superb, brilliant, wonderful fun.")
        page.click("#classify")
        page.wait_for_selector("#error:has-text('API key')", timeout=15_000)
        page.fill("#key", "s3cret")
        page.click("#classify")
        wait_for_verdict(page, "positive")
        page = browser.new_page()  # the key in the address, as README shows
        page.goto(f"http://127.0.0.1:{client.port}/#key=s3cret")
        page.wait_for_selector("#classes:has-text('neutral')", timeout=15_000)
        assert page.is_hidden("#keyrow")
        assert page.inner_text("#classes") == "Classes: negative, neutral, positive."
        page.fill("#review", "An okay, average film.")
        page.click("#classify")
        wait_for_verdict(page, expected["label"])
        bars = page.locator("#bars [role=meter]")
        assert [bars.nth(i).get_attribute("aria-label") for i in range(bars.count())] == [
            "probability of negative", "probability of neutral", "probability of positive"]
        assert [bars.nth(i).get_attribute("aria-valuenow") for i in range(3)] == [
            str(round(p * 100)) for p in expected["scores"].values()]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve-page-three-classes.png"), full_page=True)
        page.fill("#review", "An awful, dull and boring film: a waste.")
        page.click("#classify")
        wait_for_verdict(page, "negative")


@needs_browser
def test_the_page_answers_a_typed_review_in_chromium(server, tmp_path):
    review = "An awful, dull and boring film: a waste."
    expected = server.predict({"texts": [review]})[1]["predictions"][0]
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{server.port}/")
        page.keyboard.type(review)  # the text box has the focus: no mouse needed
        page.keyboard.press("Control+Enter")
        page.wait_for_selector("#verdict[data-label=negative]", timeout=15_000)
        shown = page.inner_text("#verdict")
        assert shown == f"negative ({round(expected['score'] * 100)}%)"
        bars = page.locator("#bars [role=meter]")
        assert [bars.nth(i).get_attribute("aria-label") for i in range(bars.count())] == [
            "probability of negative", "probability of positive"]
        assert [bars.nth(i).get_attribute("aria-valuenow") for i in range(bars.count())] == [
            str(round(p * 100)) for p in expected["scores"].values()]
        assert page.inner_text("#classes") == "Classes: negative, positive."
        assert page.locator("#words span").count() == 8  # every word read, highlighted by its weight

        def colour(word: str) -> str:
            return page.locator("#words span", has_text=word).first.evaluate("e => getComputedStyle(e).backgroundColor")

        # a word that speaks for a negative verdict is red, as the verdict is, and a positive word green
        assert colour("awful").startswith("rgba(198, 40, 40") and "red for negative" in page.inner_text("#legend")
        page.fill("#review", "Superb, brilliant, wonderful fun.")
        page.click("#classify")
        page.wait_for_selector("#verdict[data-label=positive]", timeout=15_000)
        assert colour("superb").startswith("rgba(26, 127, 55")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve-page.png"), full_page=True)
    assert (ARTIFACTS / "serve-page.png").stat().st_size > 1000
