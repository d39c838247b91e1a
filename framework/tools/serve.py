"""``gptf serve``: a small web page for the class, served by Python's own ``http.server``.

    GET  /            the page (framework/tools/web/index.html): chat box, sampling sliders,
                      example questions, every generated token with its probability
    GET  /api/info    the model's name, default settings, limits and example questions
    POST /api/chat    {"question": ..., "history": [{"user": ..., "assistant": ...}],
                       "temperature": ..., "top_k": ..., "top_p": ...,
                       "repetition_penalty": ..., "max_new_tokens": ..., "seed": ..., "memory": true}
                      -> {"answer": ..., "tokens": [{"text", "bytes", "probability"}],
                          "declined": ..., "confidence": ..., "model_answer": ...,
                          "recalled": ..., "recalled_similarity": ..., ...}

When the run has an answer filter (``generation.answer_filter``), an answer the model was unsure
of comes back as the filter's reply ("这个问题我还没有学过。") with ``declined: true``, the
confidence and the threshold; the page shows a badge, and the withheld answer folded away. When it
answers with a memory of its taught answers (``generation.memory``), ``recalled`` is the taught
question most like the question (and how much, 0 to 1), shown under the answer.

Why the standard library and not a web framework: three routes and JSON are all the page
needs, and ``http.server`` needs no install. Safety for a classroom:

* it listens on 127.0.0.1 (this computer only) unless ``--host`` says otherwise;
* a request body, a question and the history are bounded, every number is range-checked by
  the rules the recipe and the command line use (:mod:`gptf.recipe.limits`); anything
  malformed gets a 4xx JSON answer, never a dropped connection;
* no other web site can use it through a visitor's browser: a POST must say
  ``Content-Type: application/json`` (a cross-site form cannot), the ``Host`` must be this
  server (not a DNS-rebinding name) and an ``Origin``, when sent, must be this server too;
* a burst of a whole class is queued (a listen backlog of :data:`LISTEN_BACKLOG`, one thread
  per connection), and clients that half-close their socket after the request get answered;
* the server keeps no conversation state: the page sends the history with each question,
  so students never see each other's chats. Answers are computed one at a time under a
  lock (each gets the whole CPU, and the model is never used by two threads at once);
* request lines are logged as plain text with control characters escaped, so a client can
  neither forge log lines nor send escape sequences to the teacher's terminal.
"""

from __future__ import annotations

import codecs
import errno
import ipaddress
import json
import math
import socket
import threading
from email.message import Message
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.text import Text

from gptf.data import BROKEN_TEXT_HINT, has_broken_character, normalize_prompt
from gptf.errors import GptfError
from gptf.generate import Generation, Generator, SamplingSettings
from gptf.recipe.limits import is_number, is_whole, sampling_problems
from gptf.run import LoadedRun
from gptf.tools.conversation import Turn, conversation_ids

MAX_BODY_BYTES = 64 * 1024
MAX_QUESTION_CHARS = 200
MAX_HISTORY_TURNS = 20
MAX_TURN_CHARS = 600
#: Connections the operating system queues while every answer waits its turn (the standard
#: library's 5 made a class of 100 wait up to half a minute, or be refused).
LISTEN_BACKLOG = 128


class BadRequest(ValueError):
    """A request the page should not have sent: answered with 400 and this message."""


@attrs.frozen
class ChatRequest:
    question: str
    history: list[Turn]
    settings: SamplingSettings
    repetition_penalty: float
    seed: int | None
    memory: bool = True  # with the run's generation.memory (where it has one); false: the model alone


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string")
    if has_broken_character(value):
        raise BadRequest(f"{what} cannot be answered: {BROKEN_TEXT_HINT}")
    return value


def parse_chat_request(body: Any, defaults: SamplingSettings, max_tokens: int) -> ChatRequest:
    """Check a /api/chat body; every problem is a :class:`BadRequest`."""
    if not isinstance(body, dict):
        raise BadRequest("the request must be a JSON object")
    question = body.get("question")
    if not isinstance(question, str) or not normalize_prompt(question):
        raise BadRequest("question must be a non-empty string (not only spaces or invisible characters)")
    if len(question) > MAX_QUESTION_CHARS:
        raise BadRequest(f"the question is {len(question)} characters long; at most {MAX_QUESTION_CHARS}")
    _text(question, "the question")
    raw_history = body.get("history", [])
    if not isinstance(raw_history, list) or len(raw_history) > MAX_HISTORY_TURNS:
        raise BadRequest(f"history must be a list of at most {MAX_HISTORY_TURNS} turns")
    history = []
    for turn in raw_history:
        if not isinstance(turn, dict) or not all(isinstance(turn.get(k), str) for k in ("user", "assistant")):
            raise BadRequest('each history turn must be {"user": "...", "assistant": "..."}')
        if len(turn["user"]) + len(turn["assistant"]) > MAX_TURN_CHARS:
            raise BadRequest(f"a history turn is longer than {MAX_TURN_CHARS} characters")
        history.append(Turn(_text(turn["user"], "a history turn"), _text(turn["assistant"], "a history turn")))
    values = {
        "max_new_tokens": body.get("max_new_tokens", defaults.max_new_tokens),
        "temperature": body.get("temperature", defaults.temperature),
        "top_k": body.get("top_k", defaults.top_k),
        "top_p": body.get("top_p", defaults.top_p),
        "repetition_penalty": body.get("repetition_penalty", 1.0),
        "seed": body.get("seed"),
    }
    for key, value in values.items():
        if value is not None and not is_number(value):
            raise BadRequest(f"{key} must be a number" + (" or null" if key == "seed" else ""))
    problems = sampling_problems(values, seq_len=max_tokens)  # the rules of the recipe and the command line
    if problems:
        raise BadRequest("; ".join(f"{key} {problem}" for key, problem in problems.items()))
    settings = SamplingSettings(
        max_new_tokens=int(values["max_new_tokens"]),
        temperature=float(values["temperature"]),
        top_k=int(values["top_k"]),
        top_p=float(values["top_p"]),
    )
    seed = int(values["seed"]) if is_whole(values["seed"]) else None
    memory = body.get("memory", True)
    if not isinstance(memory, bool):
        raise BadRequest("memory must be true or false")
    return ChatRequest(question.strip(), history, settings, float(values["repetition_penalty"]), seed, memory)


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

    def __init__(
        self,
        run: LoadedRun,
        examples: list[str],
        *,
        draft: bool | None = None,
        beams: int | None = None,
        compile: bool | None = None,
        memory: bool = True,
    ) -> None:
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
        self._generator = lru_cache(maxsize=8)(
            lambda penalty: run.generator(
                repetition_penalty=penalty, draft=draft, beams=beams, compile=compile, memory=memory
            )
        )
        # answers at temperature 0 by beam search over this many candidates (1: greedy)
        self.beams = run.recipe.generation.beams if beams is None else beams
        # answers with the run's generation.memory, which a request may switch off ("memory": false)
        self.memory = memory and run.recipe.generation.memory is not None

    def generator_for(self, repetition_penalty: float) -> Generator:
        """The generator of this repetition penalty (penalties equal to 3 decimals share one)."""
        return self._generator(round(repetition_penalty, 3))

    def default_generator(self) -> Generator:
        """The generator of the recipe's repetition penalty: the one most questions are answered with."""
        return self.generator_for(default_repetition_penalty(self.run))

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
            "beams": self.beams,
            "memory": self.memory,
        }

    def answer(self, request: ChatRequest) -> dict[str, Any]:
        with self.lock:  # one answer at a time: the model and its constraints are shared
            generator = self.generator_for(request.repetition_penalty)
            generator.set_memory(request.memory)  # (under the lock: the generator is shared)
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
            # with generation.memory: the taught question most like the question ("" without)
            "recalled": generation.recalled,
            "recalled_similarity": _finite(generation.recalled_similarity),
        }


def page_html() -> bytes:
    return resources.files("gptf.tools").joinpath("web/index.html").read_bytes()


class ChatHandler(BaseHTTPRequestHandler):
    """One HTTP request. ``service``, ``console`` and ``names`` (the host names this server
    answers to) are set on a subclass by :func:`make_server`."""

    service: ChatService
    console: Console
    names: frozenset[str]
    server_version = "gptf"
    sys_version = ""
    timeout = 30  # seconds a client may take to send its request

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _answer(self, route: Any) -> None:
        """Refuse what another web site could send through a visitor's browser, then route;
        an unexpected failure is a 500 JSON answer and a log line, never a dropped connection."""
        try:
            refusal = self._foreign_request()
            if refusal is not None:
                self.close_connection = True
                self._send_json(*refusal)
                return
            route()
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away: nobody to answer
        except Exception as exc:
            self.log_error("internal error: %s: %s", type(exc).__name__, exc)
            self.close_connection = True
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error ({type(exc).__name__})"})

    def _foreign_request(self) -> tuple[HTTPStatus, dict[str, str]] | None:
        host = self.headers.get("Host")
        if host is None or not self._is_own_host(host):
            return HTTPStatus.BAD_REQUEST, {"error": f"Host {host!r} is not this server"}
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() != f"http://{host}".lower():
            return HTTPStatus.FORBIDDEN, {"error": f"requests from {origin!r} are not allowed (only from this page)"}
        if self.command == "POST":
            message = Message()
            message["Content-Type"] = self.headers.get("Content-Type", "")
            if message.get_content_type() != "application/json":
                refused = "send the request as Content-Type: application/json"
                return HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": refused}
        return None

    def _is_own_host(self, value: str) -> bool:
        """``Host`` names this server: an IP address (a DNS-rebinding page cannot have one) or
        one of its own names, with the port it listens on."""
        name, port = split_host(value)
        own_port = self.server.server_address[1]
        if port is None:
            port = 80
        if port != own_port:
            return False
        if name in self.names:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def _get(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, page_html(), "text/html; charset=utf-8")
        elif path == "/api/info":
            self._send_json(HTTPStatus.OK, self.service.info())
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no page {path}"})

    def _post(self) -> None:
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
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            # ValueError: bad JSON, or a number of more than 4,300 digits; RecursionError: [[[[...
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": f"the request body is not UTF-8 JSON ({reason})"})
            return
        try:
            request = parse_chat_request(body, self.service.defaults, self.service.max_tokens)
            reply = self.service.answer(request)
        except (BadRequest, GptfError) as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        self._send_json(HTTPStatus.OK, reply)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a malformed request line, too-long headers...), as JSON."""
        short = self.responses.get(code, ("error",))[0]
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # an unreadable request line: answer with a status line anyway
            self.request_version = "HTTP/1.0"
        self._send_json(code, {"error": message or short})

    def _send_json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header(
            "Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
        )
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        line = plain_text(f"{self.address_string()} {format % args}")
        self.console.print(Text(line, style="dim"), highlight=False)


def plain_text(text: str) -> str:
    """``text`` with every control character (newlines, escape sequences) written as ``\\x1b``."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def split_host(value: str) -> tuple[str, int | None]:
    """``"LocalHost:7860"`` -> ``("localhost", 7860)``; ``"[::1]:80"`` -> ``("::1", 80)``; a bad port -> -1."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else None
    elif value.count(":") == 1:
        name, _, port_text = value.partition(":")
    else:
        name, port_text = value, None
    if port_text is None:
        return name.rstrip("."), None
    return name.rstrip("."), int(port_text) if port_text.isdigit() and len(port_text) <= 5 else -1


class ChatServer(ThreadingHTTPServer):
    """One thread per connection, and a real listen backlog for a burst of a whole class."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True


def make_server(service: ChatService, host: str, port: int, console: Console) -> ThreadingHTTPServer:
    names = {"localhost", host.lower().strip("[]"), socket.gethostname().lower(), socket.getfqdn().lower()}
    attributes = {"service": service, "console": console, "names": frozenset(names)}
    handler = type("BoundChatHandler", (ChatHandler,), attributes)
    try:
        server = ChatServer((host, port), handler)
    except OSError as exc:
        hint = "try another --port"
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:  # the host, not the port
            hint = "--host must be an address of this computer: 127.0.0.1 (only here) or 0.0.0.0 (the whole network)"
        raise GptfError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint=hint) from exc
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
