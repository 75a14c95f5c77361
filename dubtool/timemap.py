"""`TimeMap`: the monotone piecewise-linear correspondence between source and dub time that
`dubtool align` finds and `localize` uses to carry the source performance onto the dub.

JSON schema (`timemap.json`, version 1):

    {
      "version": 1,
      "source_duration_s": 4.21, "dub_duration_s": 4.87,
      "knots": [[0.0, 0.0], [0.31, 0.28], ..., [4.21, 4.87]],     # [source_s, dub_s], both increasing
      "phrases": [{"source": [0.31, 1.42], "dub": [0.28, 1.77],  # matched speech spans
                   "source_segments": 1, "dub_segments": 2, "cost": 0.12}, ...],
      "method": "phrase-dp" | "phrase-dp+text" | "uniform",
      "notes": ["..."]
    }

Knots always start at (0, 0) and end at (source_duration_s, dub_duration_s); between knots time is
linear, so inside a matched phrase speech is stretched evenly and pauses map onto pauses.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .fileio import require_file, write_text_atomic

TIMEMAP_VERSION = 1
_EPS_S = 1e-4  # knots closer than this on either axis are merged (keeps the map strictly increasing)


@dataclass(frozen=True)
class PhraseMatch:
    """One matched group: source speech span <-> dub speech span (a 1:1, 1:2 or 2:1 grouping of phrases)."""

    source_start_s: float
    source_end_s: float
    dub_start_s: float
    dub_end_s: float
    source_segments: int = 1
    dub_segments: int = 1
    cost: float = 0.0

    def to_json(self) -> dict:
        return {"source": [round(self.source_start_s, 4), round(self.source_end_s, 4)],
                "dub": [round(self.dub_start_s, 4), round(self.dub_end_s, 4)],
                "source_segments": self.source_segments, "dub_segments": self.dub_segments,
                "cost": round(float(self.cost), 4)}


@dataclass(frozen=True)
class TimeMap:
    """Monotone piecewise-linear map between source and dub seconds. `knots` is (K, 2) [source_s, dub_s]."""

    source_duration_s: float
    dub_duration_s: float
    knots: tuple[tuple[float, float], ...]
    phrases: tuple[PhraseMatch, ...] = ()
    method: str = "uniform"
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        k = np.asarray(self.knots, dtype=np.float64)
        if k.ndim != 2 or k.shape[1] != 2 or len(k) < 2:
            raise InputError("time map needs at least two [source_s, dub_s] knots")
        if np.any(np.diff(k[:, 0]) <= 0) or np.any(np.diff(k[:, 1]) <= 0):
            raise InputError("time map knots must increase strictly on both axes")

    @property
    def knots_array(self) -> np.ndarray:
        return np.asarray(self.knots, dtype=np.float64)

    def source_time(self, dub_times_s) -> np.ndarray:
        """Source seconds for dub seconds (clamped to the ends outside the map)."""
        k = self.knots_array
        return np.interp(np.asarray(dub_times_s, dtype=np.float64), k[:, 1], k[:, 0])

    def dub_time(self, source_times_s) -> np.ndarray:
        """Dub seconds for source seconds (the inverse of `source_time`)."""
        k = self.knots_array
        return np.interp(np.asarray(source_times_s, dtype=np.float64), k[:, 0], k[:, 1])

    def local_rate(self, dub_times_s) -> np.ndarray:
        """d(source)/d(dub) at dub times: >1 where the dub is faster than the source."""
        k = self.knots_array
        slopes = np.diff(k[:, 0]) / np.diff(k[:, 1])
        seg = np.clip(np.searchsorted(k[:, 1], np.asarray(dub_times_s, np.float64), side="right") - 1,
                      0, len(slopes) - 1)
        return slopes[seg]

    def to_json(self) -> dict:
        return {"version": TIMEMAP_VERSION,
                "source_duration_s": round(self.source_duration_s, 6),
                "dub_duration_s": round(self.dub_duration_s, 6),
                "knots": [[round(a, 6), round(b, 6)] for a, b in self.knots],
                "phrases": [p.to_json() for p in self.phrases],
                "method": self.method,
                "notes": list(self.notes)}


def build_timemap(source_duration_s: float, dub_duration_s: float, pairs, phrases=(), method: str = "phrase-dp",
                  notes=()) -> TimeMap:
    """A TimeMap through (0,0), the given [source_s, dub_s] pairs and the two ends.

    Pairs are taken in the order given; one that would break strict monotonicity with those already
    taken (or sits within 0.1 ms of one on either axis, or outside the open ranges) is dropped, so
    callers list their most trusted correspondences first and any set of pairs yields a valid map.
    """
    if source_duration_s <= 0 or dub_duration_s <= 0:
        raise InputError("time map durations must be positive")
    ends = [(0.0, 0.0), (float(source_duration_s), float(dub_duration_s))]
    taken: list[tuple[float, float]] = []
    for s, d in ((float(a), float(b)) for a, b in pairs):
        ok = True
        for ps, pd in ends + taken:
            if not ((s - ps > _EPS_S and d - pd > _EPS_S) or (ps - s > _EPS_S and pd - d > _EPS_S)):
                ok = False
                break
        if ok:
            taken.append((s, d))
    pts = [ends[0]] + sorted(taken) + [ends[1]]
    return TimeMap(float(source_duration_s), float(dub_duration_s), tuple(pts), tuple(phrases), method, tuple(notes))


def uniform_timemap(source_duration_s: float, dub_duration_s: float, note: str | None = None) -> TimeMap:
    """Linear stretch of the whole source onto the whole dub."""
    return build_timemap(source_duration_s, dub_duration_s, (), method="uniform", notes=(note,) if note else ())


def timemap_from_json(data: dict, source: str = "<timemap>") -> TimeMap:
    if not isinstance(data, dict) or data.get("version") != TIMEMAP_VERSION:
        v = data.get("version") if isinstance(data, dict) else None
        raise InputError(f"{source}: time map version {v!r} (this dubtool reads {TIMEMAP_VERSION})")
    try:
        phrases = tuple(PhraseMatch(float(p["source"][0]), float(p["source"][1]), float(p["dub"][0]),
                                    float(p["dub"][1]), int(p.get("source_segments", 1)),
                                    int(p.get("dub_segments", 1)), float(p.get("cost", 0.0)))
                        for p in data.get("phrases", []))
        knots = tuple((float(a), float(b)) for a, b in data["knots"])
        return TimeMap(float(data["source_duration_s"]), float(data["dub_duration_s"]), knots, phrases,
                       str(data.get("method", "uniform")), tuple(str(n) for n in data.get("notes", [])))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise InputError(f"{source}: malformed time map ({e.__class__.__name__}: {e})") from None


def compact_json(obj) -> str:
    """Indented JSON with number pairs ([source_s, dub_s] knots, spans) kept on one line."""
    import re

    text = json.dumps(obj, indent=1)
    return re.sub(r"\[\s*(-?[\d.eE+-]+),\s*(-?[\d.eE+-]+)\s*\]", r"[\1, \2]", text) + "\n"


def timemap_json_text(tm: TimeMap) -> str:
    return compact_json(tm.to_json())


def save_timemap(tm: TimeMap, path: str | os.PathLike) -> Path:
    write_text_atomic(path, timemap_json_text(tm))
    return Path(path)


def load_timemap(path: str | os.PathLike) -> TimeMap:
    p = require_file(path, "time map file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{p}: not a JSON time map ({e})") from None
    return timemap_from_json(data, str(p))
