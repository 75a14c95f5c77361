"""dubtool keyframes: the offline planner moves the right channels for common emotions and actions,
curves ease and blink naturally, files validate, and the OpenAI-compatible backend treats the
model's reply as data (clamp, reject, retry once, fall back) against a local test server."""

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from dubtool import arkit, livelink
from dubtool.errors import InputError, LLMError
from dubtool.keyframes import (Keyframe, KeyframeTrack, PlanOptions, keyframe_curves, load_keyframes,
                               plan_keyframes, plan_offline, save_keyframes)
from dubtool.keyframes_llm import LLMConfig

FPS = 30.0
LEXICON = PlanOptions(use_embedding=False)
LOWER = [arkit.index(n) for n in arkit.LOWER_FACE]


def curves(script, duration=None, blinks=False, **kw):
    track = plan_offline(script, duration, options=LEXICON, **kw)
    return track, keyframe_curves(track, FPS, track.duration_s, blinks=blinks)


def peak(anim, name):
    return float(anim.channel(name).max())


def at(anim, name, t):
    return float(anim.channel(name)[min(anim.num_frames - 1, int(round(t * FPS)))])


# --------------------------------------------------------------------------- offline planner


def test_surprise_lifts_brows_and_widens_eyes():
    _, a = curves("[surprised] You did what? I can't believe it.")
    for name in ("browInnerUp", "browOuterUpLeft", "browOuterUpRight", "eyeWideLeft", "eyeWideRight"):
        assert peak(a, name) > 0.5, name
    assert peak(a, "browDownLeft") < 0.1
    assert np.all(a.values[:, LOWER] == 0), "lower face must be left to speech"


def test_anger_lowers_brows():
    _, a = curves("(angry) Get out of my house. Now.")
    assert peak(a, "browDownLeft") > 0.6 and peak(a, "browDownRight") > 0.6
    assert peak(a, "browInnerUp") < 0.2 and peak(a, "eyeWideLeft") < 0.05


def test_sadness_raises_inner_brows_and_drops_gaze_upper_face_only():
    _, a = curves("[sad] I miss him every single day.")
    assert peak(a, "browInnerUp") > 0.5
    assert peak(a, "eyeLookDownLeft") > 0.15 and peak(a, "LeftEyePitch") > 0.05  # pitch > 0 looks down
    assert peak(a, "mouthFrownLeft") == 0.0


def test_keyed_blink_closes_both_eyes_then_reopens():
    track, a = curves("Well *blinks* that was unexpected.")
    k = next(k for k in track.keyframes if "blink" in k.description)
    assert k.ease == "pulse"
    for name in ("eyeBlinkLeft", "eyeBlinkRight"):
        assert at(a, name, k.time_s) > 0.9
        assert at(a, name, k.time_s + 0.45) < 0.1 and at(a, name, k.time_s - 0.2) < 0.1


@pytest.mark.parametrize("side,sign", [("left", 1), ("right", -1)])
def test_glance_moves_eyes_toward_that_side(side, sign):
    track, a = curves(f"I told you (glances {side}) they are watching us.")
    k = next(k for k in track.keyframes if "glance" in k.description)
    t = k.time_s + 0.1
    assert sign * at(a, "LeftEyeYaw", t) > 0.2 and sign * at(a, "RightEyeYaw", t) > 0.2
    out_, in_ = ("eyeLookOutLeft", "eyeLookInRight") if side == "left" else ("eyeLookOutRight", "eyeLookInLeft")
    assert at(a, out_, t) > 0.4 and at(a, in_, t) > 0.4
    wrong = "eyeLookInLeft" if side == "left" else "eyeLookInRight"
    assert peak(a, wrong) == 0.0
    assert abs(at(a, "LeftEyeYaw", a.duration_s - 0.05)) < 0.02, "a glance returns"


def test_nod_is_a_head_pitch_oscillation():
    _, a = curves("(nods) Yes, I will do it.")
    p = a.channel("HeadPitch")
    maxima = [i for i in range(1, len(p) - 1) if p[i] >= p[i - 1] and p[i] > p[i + 1] and p[i] > 0.06]
    assert len(maxima) >= 2
    assert p[maxima[0]:maxima[1]].min() < 0.5 * p[maxima[0]], "the head comes back up between nods"
    assert abs(p[-1]) < 0.02


def test_head_shake_alternates_yaw():
    _, a = curves("(shakes head) I don't think so.")
    y = a.channel("HeadYaw")
    assert y.max() > 0.08 and y.min() < -0.08


def test_question_and_exclamation_cues():
    _, q = curves("Are you coming with us?")
    assert peak(q, "browInnerUp") > 0.3, "questions lift the brows"
    track, _ = curves("Wait, you knew?!")
    assert any("surprise" in k.description for k in track.keyframes)


def test_context_sets_baseline_mood_and_interjection_returns_to_it():
    track, a = curves("Context: a tense, worried conversation at night.\nWe have to go. Hmm, maybe tomorrow.\nNo.",
                      duration=5.0)
    assert a.duration_s == pytest.approx(5.0, abs=0.05)
    assert at(a, "browInnerUp", 0.5) > 0.2  # worry, at half strength
    think = next(k for k in track.keyframes if "thinking" in k.description)
    assert at(a, "eyeLookUpLeft", think.time_s + 0.3) > 0.2


def test_words_anchor_keyframes_and_times_stay_in_the_line():
    track, _ = curves("[angry] You lied to me, you LIED!", duration=2.5)
    assert track.duration_s == 2.5 and len(track.words) == 6
    assert all(0 <= k.time_s <= 2.5 for k in track.keyframes)
    assert any(k.word for k in track.keyframes)


# --------------------------------------------------------------------------- curves and blinks


def _track(kfs, duration=4.0, rate=0.0, seed=0):
    return KeyframeTrack(duration, FPS, tuple(kfs), blinks_per_min=rate, seed=seed)


@pytest.mark.parametrize("ease", ["cubic", "hermite", "linear"])
def test_eased_curves_reach_keys_hold_and_never_overshoot(ease):
    kfs = [Keyframe(1.0, "up", {"browInnerUp": 0.8}, ease, 0.5), Keyframe(2.5, "down", {"browInnerUp": 0.2}, ease, 0.0)]
    a = keyframe_curves(_track(kfs), FPS, 4.0)
    c = a.channel("browInnerUp")
    assert at(a, "browInnerUp", 0.2) == 0.0
    assert at(a, "browInnerUp", 1.0) == pytest.approx(0.8, abs=1e-3)
    assert at(a, "browInnerUp", 1.4) == pytest.approx(0.8, abs=1e-3)  # hold
    assert at(a, "browInnerUp", 3.5) == pytest.approx(0.2, abs=1e-3)  # holds last key
    assert c.max() <= 0.8 + 1e-4 and c.min() >= 0.0
    assert np.abs(np.diff(c)).max() < 0.25, "no jumps"


def test_hold_ease_is_a_step_and_close_keys_do_not_jump():
    a = keyframe_curves(_track([Keyframe(1.0, "x", {"HeadYaw": 0.3}, "hold")]), FPS, 3.0)
    assert at(a, "HeadYaw", 0.9) == 0.0 and at(a, "HeadYaw", 1.05) == pytest.approx(0.3)
    # A long hold cut short by a key 0.3 s later: the move uses the whole gap instead of jumping.
    kfs = [Keyframe(1.0, "a", {"browDownLeft": 0.9}, "cubic", 1.0), Keyframe(1.3, "b", {"browDownLeft": 0.0})]
    a = keyframe_curves(_track(kfs), FPS, 3.0)
    assert np.abs(np.diff(a.channel("browDownLeft"))).max() < 0.3
    assert 0.1 < at(a, "browDownLeft", 1.15) < 0.8
    assert at(a, "browDownLeft", 1.0) == pytest.approx(0.9, abs=1e-3) and at(a, "browDownLeft", 1.3) < 1e-3


def test_auto_blinks_have_natural_rate_and_are_deterministic():
    track = _track([], duration=60.0, rate=17.0, seed=3)
    a = keyframe_curves(track, FPS, 60.0)
    n = len(a.meta["auto_blinks_s"])
    assert 9 <= n <= 26
    assert keyframe_curves(track, FPS, 60.0).meta["auto_blinks_s"] == a.meta["auto_blinks_s"]
    assert np.isclose(a.channel("eyeBlinkLeft").max(), 1.0, atol=0.05)


def test_no_auto_blink_during_wide_eyed_hold_or_near_keyed_blink():
    kfs = [Keyframe(2.0, "surprise", {"eyeWideLeft": 0.8, "eyeWideRight": 0.8}, "cubic", 6.0),
           Keyframe(8.5, "wide ends", {"eyeWideLeft": 0.0, "eyeWideRight": 0.0}),
           Keyframe(15.0, "blink", {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}, "pulse", 0.03)]
    for seed in range(5):
        a = keyframe_curves(_track(kfs, duration=30.0, rate=30.0, seed=seed), FPS, 30.0)
        times = a.meta["auto_blinks_s"]
        assert times, "blinks still happen outside the hold"
        assert not [t for t in times if 1.7 < t < 8.4], "no blink while the eyes are held wide"
        assert not [t for t in times if abs(t - 15.0) < 0.8]


# --------------------------------------------------------------------------- file format


@pytest.fixture
def track_file(tmp_path):
    track = plan_offline("[surprised] No way! *nods* Really?", 3.0, options=LEXICON)
    return save_keyframes(track, tmp_path / "line.keyframes.json"), track


def test_keyframes_json_round_trips_and_curves_match(track_file):
    path, track = track_file
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["duration_s"] == 3.0 and data["keyframes"]
    back = load_keyframes(path)
    assert [k.time_s for k in back.keyframes] == pytest.approx([k.time_s for k in track.keyframes], abs=2e-3)
    a, b = keyframe_curves(track, FPS, 3.0), keyframe_curves(back, FPS, 3.0)
    assert np.allclose(a.values, b.values, atol=2e-3)


@pytest.mark.parametrize("edit,message", [
    (lambda k: k[0]["channels"].update(browUpInner=0.5), "keyframe 1: unknown channel 'browUpInner'"),
    (lambda k: k[0]["channels"].update(jawOpen=0.5), "keyframe 1: channel jawOpen is lower-face"),
    (lambda k: k[0]["channels"].update(browInnerUp=1.7), "keyframe 1: channel browInnerUp = 1.7 is outside 0..1"),
    (lambda k: k.append({"time_s": 9.0, "description": "x", "channels": {}}), "is outside the line"),
    (lambda k: k.append({"word": "elephant", "description": "x", "channels": {}}), "word 'elephant' is not in the line"),
    (lambda k: k.append({"time_s": 1.0, "word": "way", "description": "x", "channels": {}}), "exactly one of time_s or word"),
    (lambda k: k.append({"time_s": 1.0, "description": "x", "channels": {}, "ease": "bounce"}), "ease must be one of"),
])
def test_invalid_keyframes_file_names_the_problem(track_file, edit, message):
    path, _ = track_file
    data = json.loads(path.read_text())
    edit(data["keyframes"])
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as e:
        load_keyframes(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_broken_json_names_the_line(tmp_path):
    p = tmp_path / "k.json"
    p.write_text('{"version": 1,\n "duration_s": 2,\n "keyframes": [,]}')
    with pytest.raises(InputError, match="line 3: invalid JSON"):
        load_keyframes(p)


def test_cli_writes_json_csv_and_plot(tmp_path):
    script = tmp_path / "line.txt"
    script.write_text("[worried] Did you hear that? (glances left) Something is out there.\n", encoding="utf-8")
    out, csv, png = tmp_path / "l.keyframes.json", tmp_path / "c.csv", tmp_path / "c.png"
    r = subprocess.run([sys.executable, "-m", "dubtool", "keyframes", str(script), "-o", str(out), "--csv", str(csv),
                        "--plot", str(png), "--duration", "4", "--no-embedding", "--timecode", "10:00:00:15"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert load_keyframes(out).duration_s == 4.0
    anim = livelink.read_csv(csv)
    assert anim.num_frames == 120 and np.all(anim.values[:, LOWER] == 0)
    assert csv.read_text().splitlines()[1].startswith("10:00:00:30.000,")  # frame 15 of 30 = half a second
    assert anim.timecode_start_s == 36000.5
    assert anim.channel("browInnerUp").max() > 0.3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, "-m", "dubtool", "keyframes", str(tmp_path / "missing.txt"), "-o",
                          str(tmp_path / "x.json")], capture_output=True, text=True)
    assert bad.returncode != 0 and "script file not found" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.json").exists()


# --------------------------------------------------------------------------- the LLM backend


class FakeLLM:
    """A tiny OpenAI-compatible chat-completions server: replies from a queue, records requests."""

    def __init__(self):
        self.replies, self.requests = [], []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                reply = outer.replies.pop(0) if outer.replies else "{}"
                status = 200
                if callable(reply):
                    status, reply = reply(body)
                data = reply if status != 200 else json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": reply}}]})
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(data.encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def llm():
    server = FakeLLM()
    yield server
    server.close()


SCRIPT = "[surprised] You came back! I thought you were gone."
SECRET = "sk-test-7f3a9c-secret"


def _plan(server, monkeypatch, timeout=5.0, fallback=True, duration=3.0):
    monkeypatch.setenv("DUBTOOL_LLM_API_KEY", SECRET)
    logs = []
    cfg = LLMConfig(url=server.url, model="test-model", timeout_s=timeout, fallback=fallback)
    track = plan_keyframes(SCRIPT, duration, options=LEXICON, llm=cfg, log=logs.append)
    return track, logs


def _kf(**kw):
    k = {"time_s": 0.5, "description": "brows lift in surprise", "channels": {"browInnerUp": 0.8}, "ease": "cubic",
         "hold_s": 0.4}
    k.update(kw)
    return k


def test_llm_valid_reply_is_used_and_key_sent_only_as_bearer(llm, monkeypatch, tmp_path):
    llm.replies = [json.dumps({"keyframes": [_kf(), _kf(word="thought", time_s=None, description="gaze drops",
                                                    channels={"eyeLookDownLeft": 0.4, "LeftEyePitch": 0.2})]})]
    track, logs = _plan(llm, monkeypatch)
    assert track.source == "llm:test-model" and len(track.keyframes) == 2
    assert track.keyframes[0].channels == {"browInnerUp": 0.8}
    assert track.keyframes[1].word == "thought"
    req = llm.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert req["body"]["model"] == "test-model" and req["body"]["response_format"] == {"type": "json_object"}
    assert SECRET not in json.dumps(req["body"])
    out = save_keyframes(track, tmp_path / "k.json")
    assert SECRET not in out.read_text() and not any(SECRET in m for m in logs)


def test_llm_malformed_json_is_retried_with_the_error(llm, monkeypatch):
    llm.replies = ["{keyframes: oops", "```json\n" + json.dumps({"keyframes": [_kf()]}) + "\n```"]
    track, logs = _plan(llm, monkeypatch)
    assert track.source == "llm:test-model"
    assert len(llm.requests) == 2
    assert "not valid JSON" in llm.requests[1]["body"]["messages"][-1]["content"]
    assert any("asking once more" in m for m in logs)


def test_llm_invalid_twice_falls_back_to_offline_planner(llm, monkeypatch):
    llm.replies = ["not json at all", json.dumps({"keyframes": [_kf(channels={"eyebrowsUp": 1.0})]})]
    track, logs = _plan(llm, monkeypatch)
    assert track.source == "offline" and len(llm.requests) == 2
    assert "unknown channel 'eyebrowsUp'" in llm.requests[1]["body"]["messages"][-1]["content"] or \
        any("unknown channel 'eyebrowsUp'" in m for m in logs)
    assert any("using the offline planner" in m for m in logs)
    a = keyframe_curves(track, FPS, 3.0, blinks=False)
    assert peak(a, "eyeWideLeft") > 0.4, "the offline plan still shows the surprise cue"


def test_llm_out_of_range_values_clamped_and_lower_face_dropped(llm, monkeypatch):
    llm.replies = [json.dumps({"keyframes": [_kf(channels={"browInnerUp": 3.5, "HeadYaw": -9.0, "jawOpen": 0.7,
                                                           "eyeWideLeft": -0.4})]})]
    track, logs = _plan(llm, monkeypatch)
    ch = track.keyframes[0].channels
    assert ch["browInnerUp"] == 1.0 and ch["eyeWideLeft"] == 0.0 and -0.81 < ch["HeadYaw"] < -0.5
    assert "jawOpen" not in ch
    assert any("clamped" in m for m in logs) and any("lower-face" in m for m in logs)


def test_llm_times_outside_the_line_are_rejected(llm, monkeypatch):
    llm.replies = [json.dumps({"keyframes": [_kf(time_s=7.5)]}), json.dumps({"keyframes": [_kf(time_s=-2)]})]
    track, logs = _plan(llm, monkeypatch)
    assert track.source == "offline"
    assert "outside the line" in llm.requests[1]["body"]["messages"][-1]["content"]


def test_llm_description_only_keyframes_get_targets_offline(llm, monkeypatch):
    llm.replies = [json.dumps({"keyframes": [{"time_s": 1.0, "description": "brows furrow angrily", "ease": "cubic",
                                              "hold_s": 0.3}]})]
    track, _ = _plan(llm, monkeypatch)
    assert track.keyframes[0].channels["browDownLeft"] > 0.5


def test_llm_timeout_is_one_clear_line_or_fallback(llm, monkeypatch):
    def slow(body):
        time.sleep(1.5)
        return 200, json.dumps({"keyframes": [_kf()]})

    llm.replies = [slow]
    track, logs = _plan(llm, monkeypatch, timeout=0.3)
    assert track.source == "offline"
    assert any("did not answer within 0.3 s" in m for m in logs)
    llm.replies = [slow]
    with pytest.raises(LLMError, match=r"did not answer within 0.3 s") as e:
        _plan(llm, monkeypatch, timeout=0.3, fallback=False)
    assert "\n" not in str(e.value)


def test_llm_unreachable_server_and_http_errors(monkeypatch):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.setenv("DUBTOOL_LLM_API_KEY", SECRET)
    cfg = LLMConfig(url=f"http://user:pw@127.0.0.1:{port}/v1", timeout_s=2, fallback=False)
    with pytest.raises(LLMError, match="cannot reach language model") as e:
        plan_keyframes(SCRIPT, 3.0, options=LEXICON, llm=cfg)
    assert "pw" not in str(e.value) and SECRET not in str(e.value)
    with pytest.raises(InputError, match="must be an http"):
        plan_keyframes(SCRIPT, 3.0, options=LEXICON, llm=LLMConfig(url="ftp://x"))


def test_llm_server_rejecting_response_format_is_asked_again_without_it(llm, monkeypatch):
    llm.replies = [lambda b: (400, '{"error": "unsupported field response_format"}'),
                   json.dumps({"keyframes": [_kf()]})]
    track, _ = _plan(llm, monkeypatch)
    assert track.source == "llm:test-model" and "response_format" not in llm.requests[1]["body"]
    llm.replies = [lambda b: (401, '{"error": "bad key"}')]
    with pytest.raises(LLMError, match=r"HTTP 401.*\$DUBTOOL_LLM_API_KEY"):
        _plan(llm, monkeypatch, fallback=False)


def test_nothing_touches_the_network_without_llm_url(monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    track = plan_keyframes(SCRIPT, 3.0, options=LEXICON)
    assert track.source == "offline" and track.keyframes


# --------------------------------------------------------------------------- the embedding matcher (one load)


@pytest.fixture(scope="session")
def matcher():
    from dubtool.expressions import PrototypeMatcher, load_embedder

    real_connect = socket.socket.connect

    def guard(self, addr, *a):
        if isinstance(addr, tuple) and addr[0] not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"network access to {addr}")
        return real_connect(self, addr, *a)

    socket.socket.connect = guard
    try:
        t0 = time.perf_counter()
        m = PrototypeMatcher(embedder=load_embedder())
        m.nearest("warm up")
        m.load_s = time.perf_counter() - t0
    finally:
        socket.socket.connect = real_connect
    return m


@pytest.mark.parametrize("cue,expect,channel", [
    ("utterly bewildered by the news", ("confusion", "surprise"), "browInnerUp"),
    ("seething with fury", ("anger",), "browDownLeft"),
    ("heart breaking, holding back tears", ("sadness",), "browInnerUp"),
    ("her eyes dart toward the window on the left", ("glance_left",), "eyeLookOutLeft"),
])
def test_embedding_maps_free_text_cues_the_lexicon_misses(matcher, cue, expect, channel):
    pose, used = matcher.describe(cue)
    assert used and used[0] in expect, used
    assert pose[channel] > 0.2


def test_embedding_planner_uses_unlisted_stage_directions(matcher):
    track = plan_offline("(seething with fury) Don't you ever do that again.", 3.0, matcher=matcher)
    a = keyframe_curves(track, FPS, 3.0, blinks=False)
    assert peak(a, "browDownLeft") > 0.5


# --------------------------------------------------------------------------- the script as written (issue 18)


def _first(track, word):
    return next(k for k in track.keyframes if k.word == word)


def test_prose_letter_example_gasps_then_frowns_angrily_in_order():
    track, a = curves("She opens the letter, gasps in shock, then frowns angrily.")
    gasp, frown = _first(track, "gasps"), _first(track, "frowns")
    assert gasp.time_s < frown.time_s
    assert "surprise" in gasp.description and gasp.channels["eyeWideLeft"] > 0.5
    assert at(a, "eyeWideLeft", gasp.time_s + 0.1) > 0.5 and at(a, "browDownLeft", gasp.time_s + 0.1) < 0.1
    assert at(a, "browDownLeft", a.duration_s - 0.1) > 0.6, "ends on an angry frown"
    assert not [k for k in track.keyframes if k.time_s < gasp.time_s], "opening the letter keys nothing"


@pytest.mark.parametrize("script,channel", [
    ("(not angry) Fine, do it your way.", "browDownLeft"),
    ("(without smiling) Welcome to the hotel.", "cheekSquintLeft"),
    ("She does not smile. \"Welcome to the hotel.\"", "cheekSquintLeft"),
    ("Te escucho. (sin sonreír)", "cheekSquintLeft"),
    ("I'm not scared of you.", "eyeWideLeft"),
])
def test_negated_expressions_are_not_keyed(script, channel):
    _, a = curves(script)
    assert peak(a, channel) < 0.05


def test_intensity_words_scale_the_expression():
    _, slight = curves("(slightly annoyed) You're late.")
    _, plain = curves("(annoyed) You're late.")
    _, fierce = curves("(furiously angry) You're late.")
    s, p, f = (peak(x, "browDownLeft") for x in (slight, plain, fierce))
    assert s < 0.6 * p and f > 1.15 * p


def test_context_sets_a_baseline_that_the_lines_own_cue_overrides():
    _, a = curves("Context: she learns she was betrayed.\nI trusted you. I really did. [furious] Get out!", duration=5.0)
    assert 0.2 < at(a, "browInnerUp", 0.5) < 0.5, "sad at half strength before any cue"
    assert at(a, "browDownLeft", 0.5) < 0.2
    assert at(a, "browDownLeft", 4.8) > 0.6 and at(a, "browInnerUp", 4.8) < 0.2, "the cue's anger replaces it"


NEUTRAL = ["The meeting is at three in room twelve.", "MARK: Can you pass me the salt?",
           "He hands over the tickets and sits down.", "Context: a routine morning briefing.\nEverything is ready.",
           "El tren sale a las ocho."]


@pytest.mark.parametrize("script", NEUTRAL)
def test_lines_without_emotional_content_stay_neutral(matcher, script):
    trace = []
    track = plan_offline(script, options=PlanOptions(), matcher=matcher, trace=trace)
    assert not [e for e in trace if e.origin != "emphasis"], trace
    assert all(k.ease != "pulse" and max(k.channels.values(), default=0) < 0.5 for k in track.keyframes)


def _keyed(script):
    trace = []
    plan_offline(script, options=LEXICON, trace=trace)
    return {e.name for e in trace if e.origin != "emphasis" and e.name != "question"}


@pytest.mark.parametrize("script", [
    "Thanks for calling, the store opens at nine.", "I'm sorry, the lift is out of order.",
    "Of course, the form is on the desk.", "Finally, sign at the bottom.", "May I see your ticket?",
    "Goodbye, see you on Monday.", "Merci de votre appel.", "Gracias por su visita.", "Sorry, what?"])
def test_routine_thanks_apologies_and_discourse_words_key_nothing(script):
    assert not _keyed(script)


@pytest.mark.parametrize("script, expected", [
    ("Thank you so much!! You saved me.", "joy"), ("THANK YOU.", "joy"), ("Merci mille fois !", "joy"),
    ("¡Muchísimas gracias!", "joy"), ("Oh, thanks for nothing.", "contempt"), ("Merci pour rien.", "contempt"),
    ("Gracias por nada.", "contempt"), ("I'm so sorry for your loss.", "sadness"), ("Finally! We made it.", "relief")])
def test_the_same_formulas_said_with_feeling_key_their_emotion(script, expected):
    assert _keyed(script) == {expected}


@pytest.mark.parametrize("script", ["ANNA: (fronce les sourcils) Je ne sais pas.", "LUIS: (frunce el ceño) No lo sé."])
def test_french_and_spanish_stage_directions(script):
    track, a = curves(script)
    assert peak(a, "browDownLeft") > 0.4 and track.keyframes[0].word in ("Je", "No")


def test_csv_table_gives_one_keyframes_file_per_row_for_a_manifest(tmp_path):
    from dubtool.batch import read_manifest

    table = tmp_path / "lines.csv"
    table.write_text("Ref,Who,Text,Notes,Scene\n"
                     "L01,ANNA,You lied to me.,\"frowns angrily, then looks away\",She learns she was betrayed.\n"
                     "L02,MARK,The train leaves at five.,,\n"
                     "L03,ANNA,Tu es sûr ?,un peu inquiet,\n", encoding="utf-8")
    out = tmp_path / "kf"
    r = subprocess.run([sys.executable, "-m", "dubtool", "keyframes", str(table), "-o", str(out), "--no-embedding",
                        "--columns", "id=Ref,line=Text,direction=Notes,context=Scene,character=Who"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["L01.keyframes.json", "L02.keyframes.json",
                                                     "L03.keyframes.json", "index.csv"]
    angry = keyframe_curves(load_keyframes(out / "L01.keyframes.json"), FPS, 2.0, blinks=False)
    assert peak(angry, "browDownLeft") > 0.6
    assert not load_keyframes(out / "L02.keyframes.json").keyframes
    worried = load_keyframes(out / "L03.keyframes.json").keyframes  # "un peu inquiet": worry, slightly
    assert worried and worried[0].description.startswith("slightly") and worried[0].channels["browInnerUp"] < 0.5
    manifest = out / "manifest.csv"  # the index's file names resolve from the folder, as in a manifest
    manifest.write_text("source,dub,lang,output,keyframes\n"
                        + "".join(f"s.mp4,{i}.wav,en,{i}.csv,{i}.keyframes.json\n" for i in ("L01", "L02", "L03")))
    rows = read_manifest(manifest)
    assert [load_keyframes(r.keyframes).text for r in rows][0] == "You lied to me."
    bad = subprocess.run([sys.executable, "-m", "dubtool", "keyframes", str(table), "-o", str(out), "--no-embedding",
                          "--columns", "line=Dialogue"], capture_output=True, text=True)
    assert bad.returncode != 0 and "line=Dialogue: no such column" in bad.stderr
