"""``gptf serve``: a small web page for the class, served by Python's own ``http.server``.

    GET  /            the page (framework/tools/web/index.html): chat box, sampling sliders,
                      example questions, every generated token with its probability
    GET  /api/info    the model's name, default settings, limits and example questions
    POST /api/chat    {"question": ..., "history": [{"user": ..., "assistant": ...}],
                       "temperature": ..., "top_k": ..., "top_p": ...,
                       "repetition_penalty": ..., "max_new_tokens": ..., "seed": ...}
                      -> {"answer": ..., "tokens": [{"text", "bytes", "probability"}],
                          "declined": ..., "confidence": ..., "model_answer": ..., ...}

When the run has an answer filter (``generation.answer_filter``), an answer the model was unsure
of comes back as the filter's reply ("这个问题我还没有学过。") with ``declined: true``, the
confidence and the threshold; the page shows a badge, and the withheld answer folded away.

Why the standard library and not a web framework: three routes and JSON are all the page
needs, and ``http.server`` needs no install. Safety for a classroom:

* it listens on 127.0.0.1 (this computer only) unless ``--host`` says otherwise;
* a request body, a question and the history are bounded, every number is range-checked;
* the server keeps no conversation state: the page sends the history with each question,
  so students never see each other's chats. Answers are computed one at a time under a
  lock (each gets the whole CPU, and the model is never used by two threads at once).
"""

from __future__ import annotations

import codecs
import ipaddress
import json
import math
import threading
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console

from gptf.errors import GptfError
from gptf.generate import Generation, SamplingSettings
from gptf.run import LoadedRun
from gptf.tools.conversation import Turn, conversation_ids

MAX_BODY_BYTES = 64 * 1024
MAX_QUESTION_CHARS = 200
MAX_HISTORY_TURNS = 20
MAX_TURN_CHARS = 600


class BadRequest(ValueError):
    """A request the page should not have sent: answered with 400 and this message."""


@attrs.frozen
class ChatRequest:
    question: str
    history: list[Turn]
    settings: SamplingSettings
    repetition_penalty: float
    seed: int | None


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float, kind: type = float) -> Any:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{key} must be a number")
    if kind is int and value != int(value):
        raise BadRequest(f"{key} must be a whole number")
    if not low <= value <= high:
        raise BadRequest(f"{key} must be between {low:g} and {high:g}, got {value:g}")
    return kind(value)


def parse_chat_request(body: Any, defaults: SamplingSettings, max_tokens: int) -> ChatRequest:
    """Check a /api/chat body; every problem is a :class:`BadRequest`."""
    if not isinstance(body, dict):
        raise BadRequest("the request must be a JSON object")
    question = body.get("question")
    if not isinstance(question, str) or not question.strip():
        raise BadRequest("question must be a non-empty string")
    if len(question) > MAX_QUESTION_CHARS:
        raise BadRequest(f"the question is {len(question)} characters long; at most {MAX_QUESTION_CHARS}")
    raw_history = body.get("history", [])
    if not isinstance(raw_history, list) or len(raw_history) > MAX_HISTORY_TURNS:
        raise BadRequest(f"history must be a list of at most {MAX_HISTORY_TURNS} turns")
    history = []
    for turn in raw_history:
        if not isinstance(turn, dict) or not all(isinstance(turn.get(k), str) for k in ("user", "assistant")):
            raise BadRequest('each history turn must be {"user": "...", "assistant": "..."}')
        if len(turn["user"]) + len(turn["assistant"]) > MAX_TURN_CHARS:
            raise BadRequest(f"a history turn is longer than {MAX_TURN_CHARS} characters")
        history.append(Turn(turn["user"], turn["assistant"]))
    settings = SamplingSettings(
        max_new_tokens=_number(body, "max_new_tokens", defaults.max_new_tokens, 1, max_tokens, int),
        temperature=_number(body, "temperature", defaults.temperature, 0.0, 5.0),
        top_k=_number(body, "top_k", defaults.top_k, 0, 10_000, int),
        top_p=_number(body, "top_p", defaults.top_p, 0.01, 1.0),
    )
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise BadRequest("seed must be a whole number >= 0, or null")
    penalty = _number(body, "repetition_penalty", 1.0, 1.0, 3.0)
    return ChatRequest(question.strip(), history, settings, penalty, seed)


def token_view(tokenizer: Any, generation: Generation) -> list[dict[str, Any]]:
    """Each generated token with the text it completes, its bytes and its probability.

    A byte-level token can hold part of a character; its text is then "" and the
    character appears on the token that completes it."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    view = []
    for choice in generation.tokens:
        piece = tokenizer.token_bytes(choice.token_id)
        view.append(
            {
                "text": decoder.decode(piece, final=False),
                "bytes": piece.hex(" "),
                "probability": round(choice.probability, 4),
            }
        )
    return view


def filter_info(run: LoadedRun) -> dict[str, Any] | None:
    """The run's answer filter as the page shows it (None: every answer is shown)."""
    answer_filter = run.answer_filter()
    if answer_filter is None:
        return None
    spec = run.recipe.generation.answer_filter
    return {
        "name": spec.name,
        "measure": getattr(answer_filter, "measure", spec.name),
        "threshold": _finite(answer_filter.threshold),
        "reply": answer_filter.reply,
    }


def _finite(value: float | None) -> float | None:
    """A number JSON can carry (no infinities), rounded; None for none."""
    return round(value, 4) if value is not None and math.isfinite(value) else None


def default_repetition_penalty(run: LoadedRun) -> float:
    for spec in run.recipe.generation.constraints:
        if spec.name == "repetition_penalty":
            return float(spec.params.get("penalty", 1.1))
    return 1.0


class ChatService:
    """Answers questions with one loaded run; safe to call from many threads."""

    def __init__(self, run: LoadedRun, examples: list[str]) -> None:
        self.run = run
        self.examples = examples
        self.defaults = SamplingSettings(
            max_new_tokens=run.recipe.generation.max_new_tokens,
            temperature=run.recipe.generation.temperature,
            top_k=run.recipe.generation.top_k,
            top_p=run.recipe.generation.top_p,
        )
        self.max_tokens = run.model.config.seq_len
        self.lock = threading.Lock()
        self._generator = lru_cache(maxsize=8)(lambda penalty: run.generator(repetition_penalty=penalty))

    def info(self) -> dict[str, Any]:
        recipe = self.run.recipe
        return {
            "name": recipe.name,
            "run": str(self.run.files.root),
            "parameters": self.run.info.get("parameters") or sum(p.numel() for p in self.run.model.parameters()),
            "seq_len": self.max_tokens,
            "examples": self.examples,
            "defaults": {**attrs.asdict(self.defaults), "repetition_penalty": default_repetition_penalty(self.run)},
            "limits": {"question_chars": MAX_QUESTION_CHARS, "max_new_tokens": self.max_tokens},
            "answer_filter": filter_info(self.run),
        }

    def answer(self, request: ChatRequest) -> dict[str, Any]:
        with self.lock:  # one answer at a time: the model and its constraints are shared
            generator = self._generator(round(request.repetition_penalty, 3))
            context = conversation_ids(
                self.run.tokenizer,
                request.history,
                request.question,
                self.max_tokens,
                request.settings.max_new_tokens,
            )
            generation = generator.generate(
                request.question, request.settings, seed=request.seed, context_ids=context.ids
            )
        return {
            "answer": generation.text,
            "tokens": token_view(self.run.tokenizer, generation),
            "stop_reason": generation.stop_reason,
            "tokens_per_s": round(generation.tokens_per_s, 1),
            "kept_turns": context.kept_turns,
            "declined": generation.declined,
            "confidence": _finite(generation.confidence),
            "model_answer": generation.model_text,
        }


def page_html() -> bytes:
    return resources.files("gptf.tools").joinpath("web/index.html").read_bytes()


class ChatHandler(BaseHTTPRequestHandler):
    """One HTTP request. ``service`` and ``console`` are set on a subclass by :func:`make_server`."""

    service: ChatService
    console: Console
    server_version = "gptf"
    sys_version = ""
    timeout = 30  # seconds a client may take to send its request

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, page_html(), "text/html; charset=utf-8")
        elif path == "/api/info":
            self._send_json(HTTPStatus.OK, self.service.info())
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no page {path}"})

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/api/chat":
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY_BYTES:
            self.close_connection = True
            self._send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"send 1 to {MAX_BODY_BYTES} bytes"})
            return
        try:
            body = json.loads(self.rfile.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": f"the request body is not UTF-8 JSON ({exc})"})
            return
        try:
            request = parse_chat_request(body, self.service.defaults, self.service.max_tokens)
            reply = self.service.answer(request)
        except (BadRequest, GptfError) as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        self._send_json(HTTPStatus.OK, reply)

    def _send_json(self, status: HTTPStatus, data: Any) -> None:
        self._send(status, json.dumps(data, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header(
            "Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
        )
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        self.console.print(f"[dim]{self.address_string()} {format % args}[/]", highlight=False)


def make_server(service: ChatService, host: str, port: int, console: Console) -> ThreadingHTTPServer:
    handler = type("BoundChatHandler", (ChatHandler,), {"service": service, "console": console})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise GptfError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint="try another --port") from exc
    server.daemon_threads = True
    return server


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def example_questions(run: LoadedRun, count: int = 6) -> list[str]:
    """The recipe's demo prompts, then held-out val prompts (new phrasings) if the file is here."""
    examples = list(run.recipe.demo_prompts)
    val = run.recipe.data.val
    if val and Path(val).is_file():
        from gptf.data import read_jsonl
        from gptf.evaluate import sample_evenly

        examples += [s.prompt for s in sample_evenly(read_jsonl(val), count)]
    return list(dict.fromkeys(examples))[:count]
