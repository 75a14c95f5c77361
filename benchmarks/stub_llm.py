"""A stand-in for an OpenAI-compatible chat server, for measuring the `--llm-url` client and
pipeline without a real model: it is NOT a language model. It reads the script from the
prompt dubtool sends and answers with a keyword rule table of its own (about 25 English stems,
no negation, no intensity, no French or Spanish), one description-only keyframe per hit anchored
to the line's first word, so dubtool's stage (b) matcher fills the ARKit targets. Its scores say
that the request/validation/fill path works end to end, not how well any model plans.

    python benchmarks/stub_llm.py --port 8089     # serve until Ctrl-C
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RULES = [  # (regex on the script, description the "model" writes)
    (r"angr|furious|glar|scowl|rage", "brows pull down and together in anger"),
    (r"smil|laugh|grin|happy|delight|beam|joy|chuckl", "cheeks lift and eyes crinkle with joy"),
    (r"sad|tear|sob|cry|cries|sigh|mourn", "inner brows rise in sadness, gaze drops"),
    (r"surpris|shock|gasp|stunned|\bwow\b|whoa", "brows lift in surprise, eyes widen"),
    (r"afraid|fear|scared|terrif|frighten|nervous|flinch", "brows raise and knit in fear, eyes stare wide"),
    (r"worr|anxious|concern", "inner brows lift and pinch with worry"),
    (r"disgust|yuck|gross", "nose wrinkles in disgust, brows lower"),
    (r"frown", "brows furrow"),
    (r"\bnods?\b|\byes\b", "head nods"),
    (r"shakes? (his |her )?head", "head shakes no"),
    (r"blinks?", "blinks"),
    (r"rolls? (his |her )?eyes|\bugh\b", "eyes roll upward in exasperation"),
    (r"looks? away|turns away", "gaze turns away"),
    (r"glances? left|looks? left", "eyes glance to the left"),
    (r"glances? up|looks? up", "eyes glance up"),
    (r"looks? down|at the floor", "eyes glance down"),
    (r"whisper", "head leans in, eyes narrow conspiratorially while whispering"),
    (r"tired|yawn|exhausted", "eyelids droop with tiredness"),
    (r"confus|puzzl", "brows knit and head tilts in confusion"),
    (r"suspicious|eyebrow|skeptic", "one brow raises skeptically, eyes narrow"),
    (r"relie|phew", "eyes soften and lids lower in relief"),
    (r"tender|lovingly", "eyes soften warmly, head tilts tenderly"),
    (r"embarrass|blush|ashamed|shame", "gaze drops and head turns aside in embarrassment"),
    (r"wink", "winks with the left eye"),
    (r"hmm|thought|thinks|hesitat", "eyes drift up and aside while thinking, brows knit slightly"),
]


def reply_for(messages: list[dict]) -> str:
    """The stub's answer to dubtool's prompt: keyframes for each rule the script matches."""
    user = json.loads(messages[-1]["content"]) if messages[-1]["role"] == "user" and \
        messages[-1]["content"].lstrip().startswith("{") else json.loads(messages[1]["content"])
    script = user["script"] + " " + " ".join(user.get("context", []))
    words = user.get("words", [])
    duration = float(user["duration_s"])
    hits = sorted((m.start(), desc) for pat, desc in RULES for m in [re.search(pat, script, re.I)] if m)
    kfs = []
    for i, (_, desc) in enumerate(hits):
        t = min(duration, (words[0]["start_s"] if words else 0.0) + 0.3 * i)
        kfs.append({"time_s": round(t, 3), "description": desc, "ease": "cubic", "hold_s": 0.3})
    if not kfs:  # a plan needs at least one keyframe: the face stays relaxed
        kfs.append({"time_s": 0.0, "description": "face relaxes to neutral", "channels": {}, "ease": "cubic"})
    return json.dumps({"keyframes": kfs})


class StubServer:
    """The stub on 127.0.0.1 in a background thread (`url` is the base URL to pass as --llm-url)."""

    def __init__(self, port: int = 0) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                content = reply_for(body["messages"])
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8089)
    s = StubServer(ap.parse_args().port)
    print(f"stub (rule-based, not a model) at {s.url}")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        s.close()
