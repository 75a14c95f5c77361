"""The keyframe planner on a user's OpenAI-compatible chat-completions server (llama.cpp, vLLM,
Ollama, a hosted API): both KeyframeFace stages in one request, the answer treated as data.

Nothing is sent unless the user passes --llm-url. The API key comes from an environment variable
and is sent only as a Bearer header; messages never contain it. The model's JSON goes through the
same validator as a user's keyframes file (dubtool.keyframes.parse_keyframe), leniently: values are
clamped and lower-face channels dropped with a warning; unknown channels, times outside the line,
unknown words and malformed JSON are errors that are sent back once for a corrected answer, after
which the offline planner takes over (or, with fallback off, the command stops with one line).
"""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable

from .errors import InputError, LLMError
from .expressions import DRIVEN_CHANNELS, ROTATION_LIMITS_RAD, PrototypeMatcher
from .keyframes import EASES, KeyframeTrack, PlanOptions, Word, parse_keyframe, parse_script

MAX_KEYFRAMES = 200
MAX_RESPONSE_BYTES = 2_000_000


@dataclass(frozen=True)
class LLMConfig:
    """Where and how to ask the language model."""

    url: str
    model: str = "default"
    key_env: str = "DUBTOOL_LLM_API_KEY"
    timeout_s: float = 60.0
    fallback: bool = True  # on failure, warn and use the offline planner instead of stopping
    temperature: float = 0.2
    max_tokens: int = 2048

    def plan(self, script_text: str, duration_s: float, words: tuple[Word, ...], options: PlanOptions,
             log: Callable[[str], None] = lambda m: None,
             matcher: PrototypeMatcher | None = None) -> KeyframeTrack | None:
        """`plan_with_llm` with this configuration (what `keyframes.plan_keyframes` calls: the planner
        module needs no import of this one)."""
        return plan_with_llm(script_text, duration_s, words, options, self, log=log, matcher=matcher)


SYSTEM_PROMPT = """You are a facial animator. You plan the UPPER-FACE performance of one line of dialogue as semantic keyframes, in two steps: (1) read the script, its context and cues ([angry], (whispering), *nods*, punctuation) and decide when the face changes and describe each change in a short phrase ("brows lift in surprise, eyes widen"); (2) give each keyframe ARKit targets.

Reply with ONE JSON object and nothing else:
{"keyframes": [{"time_s": <seconds> OR "word": "<a word of the line, 'word#2' for its second occurrence>", "offset_s": <optional seconds added to the word's start>, "description": "<short facial action>", "channels": {"<channel>": <value>, ...}, "ease": "cubic|hermite|linear|hold|pulse", "hold_s": <seconds>, "ease_s": <optional transition seconds>}]}

Rules:
- Allowed channels (exact names): %(channels)s. Nothing else: the mouth, jaw and cheeks-puff come from speech.
- Blendshapes are 0..1. Rotations are radians: HeadYaw and eye yaw > 0 turn toward the character's own left, HeadPitch and eye pitch > 0 look down, HeadRoll > 0 tilts toward the right shoulder. Limits: %(limits)s.
- Times are between 0 and %(duration).3f s (the line's length). Word anchors must be words of the line.
- A keyframe keys only the channels it lists; they hold until a later keyframe changes them, so return channels to 0 when an expression ends. Channels start at 0.
- ease "pulse" is a transient (blink, nod, glance, brow flash) that returns by itself; for a nod key HeadPitch ~0.12 twice, 0.3 s apart; for a head shake alternate HeadYaw +-0.12.
- Typical: surprise = browInnerUp/browOuterUp* ~0.8 + eyeWide* ~0.7; anger = browDown* ~0.8 + eyeSquint* ~0.35; sadness = browInnerUp ~0.7 + gaze down; blink = eyeBlinkLeft/Right 1.0 pulse.
- A line with no emotional content stays neutral: routine thanks, greetings, apologies and logistics ("Thanks for calling.", "Sorry, the office closes at six.") get no emotion unless the script marks one ("Thank you so much!!", a cue, a context); then give one keyframe at time_s 0, description "face relaxes to neutral", "channels": {}.
- 2 to 10 keyframes for a short line that does carry expression."""


def endpoint(url: str) -> str:
    """The chat-completions URL for a base URL ("http://host:8080/v1") or a full one."""
    u = url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(u)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"--llm-url must be an http(s) URL such as http://127.0.0.1:8080/v1, got {_shown(url)!r}")
    if u.endswith("/chat/completions"):
        return u
    return u + "/chat/completions"


def _shown(url: str) -> str:
    """A URL as it may be printed: without user:password@."""
    try:
        p = urllib.parse.urlsplit(url)
    except ValueError:
        return "<url>"
    netloc = p.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, "", ""))


def build_messages(script_text: str, duration_s: float, words: tuple[Word, ...]) -> list[dict]:
    limits = ", ".join(f"{k} +-{v:g}" for k, v in ROTATION_LIMITS_RAD.items())
    system = SYSTEM_PROMPT % {"channels": ", ".join(DRIVEN_CHANNELS), "limits": limits, "duration": duration_s}
    script = parse_script(script_text)
    user = {
        "script": script_text.strip(),
        "context": script.context,
        "duration_s": round(duration_s, 3),
        "words": [{"word": w.text, "start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3)} for w in words],
    }
    return [{"role": "system", "content": system},
            {"role": "user", "content": json.dumps(user, ensure_ascii=False)}]


# CSI/OSC/other escape sequences and C0/C1 control characters (tab and newline kept): a server's text is
# printed on the user's terminal, where these could move the cursor, retitle the window or hide text.
_TERMINAL_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?"
                               r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def strip_terminal_control(text: str) -> str:
    """`text` without terminal escape sequences or control characters (tabs and newlines stay)."""
    return _TERMINAL_CONTROL.sub("", text)


class _Redactor:
    """Makes text from (or about) the server safe to print: the API key replaced where it occurs as a
    whole token (a key 'k' leaves "known" alone), terminal control sequences removed."""

    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        self._pattern = (re.compile(r"(?<![A-Za-z0-9_-])" + re.escape(secret) + r"(?![A-Za-z0-9_-])")
                         if secret else None)

    def __call__(self, text: str) -> str:
        text = strip_terminal_control(text)
        return self._pattern.sub("***", text) if self._pattern else text


MAX_REDIRECTS = 5


def _origin(parts: urllib.parse.SplitResult) -> tuple:
    return (parts.scheme, (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80))


def _post(cfg: LLMConfig, payload: dict, redact: _Redactor) -> tuple[int, str]:
    """POST JSON; (status, body). The whole exchange (connect, redirects, headers, body) ends within
    cfg.timeout_s: a watchdog closes the connection at the deadline, so a server trickling one byte a
    second cannot hold it open. Redirects are followed (at most 5, http/https only); the Authorization
    header goes only to the origin the user named. Network failures become one-line LLMErrors."""
    import http.client
    import threading
    import time

    url = endpoint(cfg.url)
    shown = _shown(url)
    data = json.dumps(payload).encode("utf-8")
    key = os.environ.get(cfg.key_env) if cfg.key_env else None
    first = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + cfg.timeout_s
    timed_out = LLMError(f"language model at {shown} did not answer within {cfg.timeout_s:g} s "
                         f"(raise --llm-timeout or check the server)")
    for _hop in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LLMError(redact(f"language model at {shown} redirected to a non-http(s) address"))
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "dubtool"}
        if key and _origin(parts) == _origin(first):
            headers["Authorization"] = f"Bearer {key}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise timed_out
        conn_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conn_type(parts.hostname, parts.port, timeout=remaining)
        expired = threading.Event()

        def on_deadline(conn=conn) -> None:
            expired.set()
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        watchdog = threading.Timer(remaining, on_deadline)
        watchdog.daemon = True
        watchdog.start()
        try:
            path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            conn.request("POST", path, body=data, headers=headers)
            resp = conn.getresponse()
            status = resp.status
            location = resp.getheader("Location")
            limit = MAX_RESPONSE_BYTES if status == 200 else 4000
            chunks, size = [], 0
            while size < limit:
                chunk = resp.read1(min(65536, limit - size)) if hasattr(resp, "read1") else resp.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if time.monotonic() > deadline:
                    raise timed_out
            if expired.is_set():
                raise timed_out
        except LLMError:
            raise
        except (socket.timeout, TimeoutError):
            raise timed_out from None
        except (http.client.HTTPException, ConnectionError, OSError) as e:
            if expired.is_set() or time.monotonic() > deadline:
                raise timed_out from None
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise LLMError(redact(f"cannot reach language model at {shown}: {reason}")) from None
        finally:
            watchdog.cancel()
            conn.close()
        if status in (301, 302, 303, 307, 308) and location:
            url = urllib.parse.urljoin(url, location)
            continue
        return status, b"".join(chunks).decode("utf-8", "replace")
    raise LLMError(f"language model at {shown} redirected more than {MAX_REDIRECTS} times")


def chat(cfg: LLMConfig, messages: list[dict], redact: _Redactor | None = None) -> str:
    """One chat-completions call; the assistant message's text. Asks for a JSON object
    (`response_format`) and asks again without it if the server rejects that field."""
    redact = redact or _Redactor(os.environ.get(cfg.key_env) if cfg.key_env else None)
    payload = {"model": cfg.model, "messages": messages, "temperature": cfg.temperature,
               "max_tokens": cfg.max_tokens, "response_format": {"type": "json_object"}}
    status, body = _post(cfg, payload, redact)
    if status == 400 and "response_format" in body:
        payload.pop("response_format")
        status, body = _post(cfg, payload, redact)
    shown = _shown(endpoint(cfg.url))
    if status in (401, 403):
        raise LLMError(f"language model at {shown} refused the request (HTTP {status}); "
                       f"check the API key in ${cfg.key_env}")
    if status != 200:
        detail = " ".join(body.split())[:160]
        raise LLMError(redact(f"language model at {shown} answered HTTP {status}: {detail}"))
    try:
        data = json.loads(body)
        content = data["choices"][0]["message"]["content"]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
        raise LLMError(f"language model at {shown} did not answer in the chat-completions format") from None
    if not isinstance(content, str):
        raise LLMError(f"language model at {shown} returned no text content")
    return content


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse_llm_keyframes(content: str, duration_s: float, words: tuple[Word, ...],
                        fill: Callable[[str], dict[str, float]] | None = None) -> tuple[list, list[str]]:
    """The model's reply -> (keyframes, warnings), or InputError saying what is wrong with it."""
    m = _FENCE.match(content)
    text = m.group(1) if m else content.strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"reply is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    items = data.get("keyframes") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InputError("reply must be an object with a 'keyframes' list")
    if not items:
        raise InputError("reply has no keyframes")
    if len(items) > MAX_KEYFRAMES:
        raise InputError(f"reply has {len(items)} keyframes (at most {MAX_KEYFRAMES})")
    warnings: list[str] = []
    kfs = [parse_keyframe(obj, f"keyframe {i + 1}", duration_s, words, False, warnings, fill)
           for i, obj in enumerate(items)]
    kfs.sort(key=lambda k: k.time_s)
    return kfs, warnings


def plan_with_llm(script_text: str, duration_s: float, words: tuple[Word, ...], options: PlanOptions,
                  cfg: LLMConfig, log: Callable[[str], None] = lambda m: None,
                  matcher: PrototypeMatcher | None = None) -> KeyframeTrack | None:
    """Keyframes from the model; None (after a warning) when it fails and fallback is allowed."""
    endpoint(cfg.url)  # a malformed URL is the user's error, not a reason to fall back
    redact = _Redactor(os.environ.get(cfg.key_env) if cfg.key_env else None)
    messages = build_messages(script_text, duration_s, words)
    holder: dict = {}

    def fill(description: str) -> dict[str, float]:
        # A keyframe with a description but no channels: stage (b) by the offline matcher.
        if "m" not in holder:
            holder["m"] = matcher or PrototypeMatcher(use_embedding=options.use_embedding)
        return holder["m"].describe(description)[0]

    def give_up(msg: str) -> None:
        msg = redact(msg)
        if not cfg.fallback:
            raise LLMError(msg)
        log(f"warning: {msg}; using the offline planner")

    for attempt in range(2):
        try:
            content = chat(cfg, messages, redact)
        except LLMError as e:
            give_up(str(e))
            return None
        try:
            kfs, warnings = parse_llm_keyframes(content, duration_s, words, fill)
        except InputError as e:
            if attempt == 0:
                log(f"warning: language model output invalid ({redact(str(e))}); asking once more")
                messages = messages + [
                    {"role": "assistant", "content": content[:8000]},
                    {"role": "user", "content": f"That reply was invalid: {e}. Reply with the corrected JSON "
                                                f"object only, following every rule."},
                ]
                continue
            give_up(f"language model output still invalid after a retry ({e})")
            return None
        for w in warnings:
            log(f"warning: language model output: {redact(w)}")
        return KeyframeTrack(float(duration_s), options.fps, tuple(kfs), parse_script(script_text).spoken_text,
                             tuple(words), options.blinks_per_min, options.seed, f"llm:{cfg.model}")
    return None


__all__ = ["LLMConfig", "EASES", "build_messages", "chat", "endpoint", "parse_llm_keyframes", "plan_with_llm"]
