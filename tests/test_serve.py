"""gptf serve: the JSON API, its limits, concurrency, the command, and the page in headless Chromium."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from gptf.errors import GptfError
from gptf.tools.serve import ChatService, is_loopback, make_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


#: What the server logs (its request lines), for the tests that check the log.
SERVER_LOG = io.StringIO()


@pytest.fixture(scope="module")
def server_url(tiny_run: Path) -> Iterator[str]:
    """The tiny run served on a free loopback port, in a background thread."""
    from gptf.run import load_run

    run = load_run(tiny_run)
    log = Console(file=SERVER_LOG, width=400, color_system=None)
    server = make_server(ChatService(run, ["什么是注意力机制？", "你是谁？"]), "127.0.0.1", 0, log)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def call(url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_info_and_an_answer_with_token_probabilities(server_url: str) -> None:
    status, info = call(server_url + "/api/info")
    assert status == 200 and info["name"] == "tiny" and info["examples"][0] == "什么是注意力机制？"
    assert info["defaults"]["repetition_penalty"] == 1.1 and info["limits"]["max_new_tokens"] == 64
    assert info["memory"] is False  # the tiny recipe has no generation.memory: the page hides the switch
    status, reply = call(server_url + "/api/chat", {"question": "什么是注意力机制？", "max_new_tokens": 10})
    assert status == 200, reply
    assert 1 <= len(reply["tokens"]) <= 10 and reply["stop_reason"] in ("eos", "max_new_tokens", "stop")
    assert all(0.0 <= t["probability"] <= 1.0 for t in reply["tokens"])
    # the token texts put together are the raw answer: partial characters show up on the token that completes them
    joined = "".join(t["text"] for t in reply["tokens"])
    assert "\ufffd" not in joined and joined.rstrip().endswith(reply["answer"])
    assert reply["recalled"] == "" and reply["recalled_similarity"] is None  # the tiny recipe has no memory


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"question": ""}, "question must be a non-empty string"),
        ({"question": "\u200b\n\u3000"}, "not only spaces or invisible characters"),
        ({"question": "问" * 201}, "at most 200"),
        ({"question": "好", "temperature": 1000}, "temperature must be 0 (greedy) or between 0.001 and 100"),
        ({"question": "好", "top_k": 1.5}, "top_k must be a whole number"),
        ({"question": "好", "top_p": "high"}, "top_p must be a number"),
        ({"question": "好", "max_new_tokens": 1000}, "max_new_tokens must be a whole number from 1 to 64"),
        ({"question": "好", "history": [{"user": "a"}]}, "each history turn"),
        ({"question": "好", "history": [{"user": "a", "assistant": "b"}] * 21}, "at most 20 turns"),
        ({"question": "好", "seed": -1}, "seed must be"),
        ({"question": "好", "memory": "yes"}, "memory must be true or false"),
        (["not", "an", "object"], "must be a JSON object"),
    ],
)
def test_bad_requests_get_a_clear_400(server_url: str, body: Any, message: str) -> None:
    status, reply = call(server_url + "/api/chat", body)
    assert status == 400 and message in reply["error"]


def test_size_limits_and_unknown_paths(server_url: str) -> None:
    status, reply = call(server_url + "/api/chat", raw=b"{" + b" " * (70 * 1024) + b"}")
    assert status == 413
    status, reply = call(server_url + "/api/chat", raw=b"not json")
    assert status == 400 and "not UTF-8 JSON" in reply["error"]
    status, reply = call(server_url + "/nope")
    assert status == 404


def test_concurrent_requests_do_not_corrupt_each_other(server_url: str) -> None:
    requests = [
        {"question": q, "temperature": t, "top_k": k, "seed": s, "max_new_tokens": 12}
        for q, t, k, s in [
            ("什么是注意力机制？", 0.0, 0, None),
            ("你是谁？", 1.0, 20, 1),
            ("什么是RoPE？", 0.8, 0, 2),
            ("北京是哪个国家的首都", 1.2, 50, 3),
        ]
    ]
    alone = [call(server_url + "/api/chat", r)[1] for r in requests]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda r: call(server_url + "/api/chat", r)[1], requests * 3))
    for index, reply in enumerate(together):
        expected = alone[index % len(requests)]
        assert reply["answer"] == expected["answer"]
        assert [t["bytes"] for t in reply["tokens"]] == [t["bytes"] for t in expected["tokens"]]


def test_history_is_sent_by_the_page_and_truncated_to_fit(server_url: str) -> None:
    history = [{"user": "问题" * 5, "assistant": "回答" * 20}] * 6
    status, reply = call(server_url + "/api/chat", {"question": "你是谁？", "history": history, "max_new_tokens": 8})
    assert status == 200 and reply["kept_turns"] < len(history)  # the oldest turns no longer fit in seq_len=64


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_serve_command_listens_on_loopback_and_stops_on_ctrl_c(tiny_run: Path, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "gptf", "serve", "--ckpt", str(tiny_run), "--port", "0", "--device", "cpu"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200", "OMP_NUM_THREADS": "1"},
    )
    try:
        first = process.stdout.readline()  # type: ignore[union-attr]
        assert "http://127.0.0.1:" in first, first + process.stderr.read()  # type: ignore[union-attr]
        url = first.split("http://", 1)[1].split("/", 1)[0]
        status, info = call(f"http://{url}/api/info")
        assert status == 200 and info["name"] == "tiny"
        with urllib.request.urlopen(f"http://{url}/", timeout=30) as page:
            assert "gptf" in page.read().decode("utf-8")
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason="needs Debian's chromium and chromium-driver")
def test_the_page_in_headless_chromium(server_url: str, tmp_path: Path) -> None:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--window-size=1200,900",
    ):
        options.add_argument(argument)
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))  # no driver download
    try:
        browser.get(server_url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        assert browser.find_element(By.ID, "model-name").text == "tiny"
        examples = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#examples button")]
        assert examples == ["什么是注意力机制？", "你是谁？"]
        assert browser.find_element(By.ID, "temperature").get_attribute("value") == "0"

        browser.find_element(By.ID, "question").send_keys("什么是RoPE？")
        browser.find_element(By.ID, "send").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".a.answered"))
        answer = browser.find_element(By.CSS_SELECTOR, ".a.answered").text
        expected = call(server_url + "/api/chat", {"question": "什么是RoPE？", "repetition_penalty": 1.1})[1]
        assert answer == (expected["answer"] or "（没有回答）")  # the page shows what the model answered
        chips = browser.find_elements(By.CSS_SELECTOR, ".turn .tok")
        assert len(chips) == len(expected["tokens"]) and "p = " in chips[0].get_attribute("title")

        browser.find_elements(By.CSS_SELECTOR, "#examples button")[1].click()  # an example question
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".a.answered")) == 2)
        browser.save_screenshot(str(tmp_path / "page.png"))
        browser.find_element(By.ID, "reset").click()
        assert browser.find_elements(By.CSS_SELECTOR, ".turn") == []
    finally:
        browser.quit()


# --- issue 13: malformed requests, bursts, other web sites -----------------------------------


def raw_request(url: str, data: bytes, *, half_close: bool = False, timeout: float = 60) -> tuple[int, bytes]:
    """Send ``data`` as is on a new connection; the status code and the body of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(data)
        if half_close:
            connection.shutdown(socket.SHUT_WR)  # "that is all I send", but still listening
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def post(url: str, body: bytes, **headers: str) -> bytes:
    """A raw POST /api/chat; ``headers`` (``Content_Type="text/plain"``) replace or add to the usual ones."""
    fields = {"Host": url.removeprefix("http://"), "Content-Type": "application/json"}
    fields.update({k.replace("_", "-"): v for k, v in headers.items()})
    lines = ["POST /api/chat HTTP/1.1", *(f"{k}: {v}" for k, v in fields.items()), f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_case5_malformed_requests_get_a_clear_json_answer_and_a_plain_log_line(server_url: str) -> None:
    host = server_url.removeprefix("http://")
    cases = [
        (post(server_url, b'{"question": "\\ud800"}'), 400, "not UTF-8 text"),
        (
            post(server_url, '{"question": "好", "max_new_tokens": NaN}'.encode()),
            400,
            "max_new_tokens must be a number",
        ),
        (post(server_url, b'{"question": "x", "seed": ' + b"9" * 5000 + b"}"), 400, "not UTF-8 JSON"),
        (post(server_url, b"[" * 20000), 400, "nested too deeply"),
        (post(server_url, b'{"question": "\\u597d", "history": [{"user": "\\udfff", "assistant": ""}]}'), 400, "UTF-8"),
        (f"GET /[/] HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(), 404, "no page /[/]"),
        (f"GET /\x1b[2J\x1b[31mforged HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(), 404, "no page"),
        (b"NONSENSE\r\n\r\n", 400, "Bad request syntax"),
        (b"GET / HTTP/9.9\r\n\r\n", 505, "Invalid HTTP version"),
    ]
    for data, status, fragment in cases:
        got, body = raw_request(server_url, data)
        assert got == status, (data[:80], body)
        assert fragment in json.loads(body)["error"], (data[:80], body)
    log = SERVER_LOG.getvalue()
    assert '"GET /[/] HTTP/1.1" 404' in log
    assert "\x1b" not in log and "\\x1b[2J\\x1b[31mforged" in log  # escaped, never sent to the terminal


def test_case6_a_burst_of_a_whole_class_is_answered_in_seconds(server_url: str) -> None:
    body = json.dumps({"question": "什么是注意力机制？", "max_new_tokens": 4}).encode()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=100) as pool:
        normal = list(
            pool.map(
                lambda _: call(server_url + "/api/chat", {"question": "你是谁？", "max_new_tokens": 4}), range(100)
            )
        )
        closing = list(pool.map(lambda _: raw_request(server_url, post(server_url, body), half_close=True), range(50)))
    elapsed = time.monotonic() - started
    assert [status for status, _ in normal] == [200] * 100
    assert [status for status, _ in closing] == [200] * 50
    assert all("answer" in json.loads(reply) for _, reply in closing)
    assert elapsed < 60, f"150 requests took {elapsed:.1f}s"


def test_case11_other_web_sites_cannot_use_the_server_through_a_browser(server_url: str) -> None:
    host = server_url.removeprefix("http://")
    port = host.rsplit(":", 1)[1]
    question = json.dumps({"question": "你好", "max_new_tokens": 2}).encode()
    refused = [
        (post(server_url, question, Content_Type="text/plain"), 415, "Content-Type: application/json"),
        (
            post(server_url, question).replace(f"Host: {host}".encode(), f"Host: evil.example:{port}".encode()),
            400,
            "not this server",
        ),
        (f"GET /api/info HTTP/1.1\r\nHost: evil.example:{port}\r\n\r\n".encode(), 400, "not this server"),
        (b"GET /api/info HTTP/1.1\r\nHost: localhost:1\r\n\r\n", 400, "not this server"),
        (b"GET /api/info HTTP/1.0\r\n\r\n", 400, "not this server"),
        (post(server_url, question, Origin="http://evil.example"), 403, "not allowed"),
        (post(server_url, question, Origin="null"), 403, "not allowed"),
    ]
    for data, status, fragment in refused:
        got, body = raw_request(server_url, data)
        assert got == status and fragment in json.loads(body)["error"], (data[:120], got, body)
    for name in (host, f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        request = post(server_url, question, Origin=f"http://{name}").replace(
            f"Host: {host}".encode(), f"Host: {name}".encode()
        )
        got, body = raw_request(server_url, request)
        assert got == 200, (name, body)


def test_a_port_in_use_and_an_address_not_of_this_computer_say_what_to_change() -> None:
    log = Console(file=io.StringIO())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(GptfError) as busy:
            make_server(None, "127.0.0.1", taken.getsockname()[1], log)  # type: ignore[arg-type]
    assert busy.value.hint == "try another --port"
    with pytest.raises(GptfError) as elsewhere:  # 192.0.2.1: a documentation address, on no computer
        make_server(None, "192.0.2.1", 0, log)  # type: ignore[arg-type]
    assert "cannot listen on 192.0.2.1:0" in str(elsewhere.value)
    assert (elsewhere.value.hint or "").startswith("--host must be an address of this computer")
