"""Stage (a) input, the script as written: which emotions and facial/head actions its stage
directions, prose and context lines name, how strongly and in what order, and the tables
(CSV/TSV with id, character, line, direction, context columns) localization teams keep them in.

Negation ("not angry", "without smiling", "sans sourire", "sin sonreír") drops what it governs;
intensity words ("slightly", "furiously", "un peu", "muy") scale it. The lexicon (English, French
and Spanish cue words in dubtool/data/expressions.json) is read first; clauses it misses go to the
sentence embedding, which must beat both a similarity floor and the nearest piece of non-expressive
stage business ("opens the letter") by a margin, so a line without emotional content keys nothing.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .expressions import Prototype, PrototypeMatcher, keyword_spans, load_library
from .fileio import require_file

# Embedding acceptance, tuned on the tuning third of benchmarks/data/keyframes_eval (not the held-out part).
CUE_MIN_SCORE = 0.40      # a bracketed cue or direction column: the writer meant an expression
PROSE_MIN_SCORE = 0.45    # narration and context lines
REJECT_MARGIN = 0.05      # must beat the nearest non-expressive phrase by this much
LOW, HIGH = 0.5, 1.3      # intensity factors for "slightly" / "furiously"

_TOKEN = re.compile(r"[\w']+")
_CLAUSE_BREAK = re.compile(
    r"\s*[,;:.!?…—()\[\]\"“”«»]+\s*|\s+(?:and then|then|and|but|while|as|before|after|"
    r"puis|et|mais|alors|avant de|luego|y|pero|mientras|entonces|antes de)\s+", re.IGNORECASE)
_NEGATORS = {"not", "no", "never", "without", "nor", "neither", "hardly", "cannot", "stops", "stop", "stopped",
             "ceases", "pas", "sans", "jamais", "ne", "ni", "aucun", "aucune", "arrête", "cesse",
             "sin", "nunca", "jamás", "tampoco", "deja"}
_LOW = re.compile(r"\b(?:slightly|a little|a bit|barely|faintly|subtly|mildly|somewhat|a hint of|a touch|faint|slight|"
                  r"half|légèrement|un peu|à peine|vaguement|ligeramente|un poco|apenas|levemente)\b", re.IGNORECASE)
_HIGH = re.compile(r"\b(?:very|so|extremely|furiously|wildly|deeply|utterly|totally|completely|incredibly|intensely|"
                   r"violently|fiercely|terribly|hugely|really|absolutely|très|furieusement|extrêmement|profondément|"
                   r"complètement|vraiment|muy|furiosamente|extremadamente|profundamente|totalmente|realmente)\b",
                   re.IGNORECASE)
_SELF_REPORT = re.compile(r"\b(?:i'm|i am|i feel|i felt|i was|i've been|we're|we are|i get|i got)\b", re.IGNORECASE)
_NARRATOR = {"she", "he", "they", "her", "his", "their", "elle", "il", "ils", "elles", "ella", "él", "ellos", "ellas"}
_FIRST_SECOND = {"i", "i'm", "me", "my", "you", "your", "we", "our", "us", "je", "tu", "vous", "nous", "yo", "tú",
                 "usted", "nosotros"}


@dataclass(frozen=True)
class Reading:
    """One expression a text names: the prototype, its intensity, where in the text, and how
    sure (1 for a lexicon hit, else the embedding cosine)."""

    proto: Prototype
    intensity: float
    start: int
    end: int
    score: float = 1.0
    clause: int = 0  # index of the clause of the text it was read from


def clauses(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of a text's clauses: split at punctuation and at
    "then/and/but/while" (and their French and Spanish counterparts)."""
    out, pos = [], 0
    for m in _CLAUSE_BREAK.finditer(text):
        if m.start() > pos:
            out.append((pos, m.start()))
        pos = m.end()
    if pos < len(text):
        out.append((pos, len(text)))
    return [(s, e) for s, e in out if _TOKEN.search(text[s:e])]


def _negated(before: str) -> bool:
    for tok in _TOKEN.findall(before.lower())[-4:]:
        if tok in _NEGATORS or tok.endswith("n't") or tok.startswith("n'"):
            return True
    return False


def _intensity(before: str, after: str) -> float:
    near = " ".join(_TOKEN.findall(before)[-3:] + [";"] + _TOKEN.findall(after)[:2])
    f = 1.0
    if _LOW.search(near):
        f *= LOW
    if _HIGH.search(near):
        f *= HIGH
    return f


def _negation_cut(clause: str) -> int:
    """Offset of the first negator in a clause (its scope runs to the clause end), or len(clause)."""
    for m in _TOKEN.finditer(clause):
        tok = m.group(0).lower()
        if tok in _NEGATORS or tok.endswith("n't") or tok.startswith("n'"):
            return m.start()
    return len(clause)


def read_directions(texts: list[str], matcher: PrototypeMatcher | None = None,
                    min_score: float = CUE_MIN_SCORE, library: tuple[Prototype, ...] | None = None
                    ) -> list[list[Reading]]:
    """The readings of each stage direction / prose / context text, in text order.

    Lexicon hits are kept unless negated; a clause with no hit goes (all clauses of all texts in
    one batch) to the embedding when `matcher` is given."""
    library = library or load_library()
    out: list[list[Reading]] = [[] for _ in texts]
    pending: list[tuple[int, int, int, str, int]] = []  # (text, start, end, clause text, clause index)
    for ti, text in enumerate(texts):
        for k, (cs, ce) in enumerate(clauses(text)):
            clause = text[cs:ce]
            hits = keyword_spans(clause, library)
            any_hit, named = False, set()
            for s, e, pr in hits:
                any_hit = True
                if _negated(clause[:s]) or pr.name in named:  # "gasps in shock": one surprise
                    continue
                named.add(pr.name)
                out[ti].append(Reading(pr, _intensity(clause[:s], clause[e:]), cs + s, cs + e, 1.0, k))
            if any_hit or matcher is None or not matcher.uses_embedding:
                continue
            cut = _negation_cut(clause)
            kept = clause[:cut].strip()
            if len(_TOKEN.findall(kept)) >= (1 if cut == len(clause) else 2):
                pending.append((ti, cs, cs + len(kept), kept, k))
    if pending:
        ranked = matcher.rank([p[3] for p in pending])
        for (ti, s, e, clause, k), (pr, score, null) in zip(pending, ranked):
            if score >= min_score and score >= null + REJECT_MARGIN and pr.kind != "prosody":
                out[ti].append(Reading(pr, _intensity(clause, ""), s, e, score, k))
        for r in out:
            r.sort(key=lambda x: x.start)
    return out


def read_dialogue(text: str, library: tuple[Prototype, ...] | None = None) -> list[Reading]:
    """Emotions a speaker states about themselves ("I'm so angry", "I am not afraid" -> nothing).

    Other emotion words in dialogue ("are you angry?", "look left") are what a character says, not
    what their face does, and key nothing."""
    library = library or load_library()
    out = []
    for cs, ce in clauses(text):
        clause = text[cs:ce]
        m = _SELF_REPORT.search(clause)
        if not m:
            continue
        for s, e, pr in keyword_spans(clause[m.end():], library):
            s, e = s + m.end(), e + m.end()
            if pr.kind != "emotion" or len(_TOKEN.findall(clause[m.end():s])) > 3 or _negated(clause[m.start():s]):
                continue
            out.append(Reading(pr, _intensity(clause[m.end():s], clause[e:]), cs + s, cs + e))
            break
    return out


def is_narration(text: str) -> bool:
    """A prose line describing the character ("She opens the letter, gasps in shock...") rather
    than dialogue: it starts with a third-person subject and never says I/you/we."""
    toks = [t.lower() for t in _TOKEN.findall(text)]
    return len(toks) >= 2 and toks[0] in _NARRATOR and not (set(toks) & _FIRST_SECOND)


# ---------------------------------------------------------------------------------------------
# Script tables: CSV/TSV rows -> one script per row.

ROLES = ("id", "character", "line", "direction", "context", "duration")
_ROLE_NAMES = {
    "id": ("id", "line_id", "lineid", "key", "cue_id", "ref"),
    "character": ("character", "speaker", "name", "role", "actor"),
    "line": ("line", "text", "dialogue", "dialog", "script", "source_text", "dub_text"),
    "direction": ("direction", "directions", "stage_direction", "stage direction", "notes", "note", "emotion",
                  "delivery", "performance"),
    "context": ("context", "scene", "situation", "mood", "setting"),
    "duration": ("duration", "duration_s", "length_s", "seconds"),
}


@dataclass(frozen=True)
class ScriptRow:
    """One row of a script table."""

    row: int  # line number in the file
    id: str
    line: str
    character: str = ""
    direction: str = ""
    context: str = ""
    duration_s: float | None = None

    def script_text(self) -> str:
        """The row as a script: context line, then the direction as a cue before the line."""
        parts = []
        if self.context:
            parts.append("Context: " + " ".join(self.context.split()))
        direction = " ".join(re.sub(r"[\[\]]", " ", self.direction).split())
        line = " ".join(self.line.split())
        parts.append((f"[{direction}] " if direction else "") + line)
        return "\n".join(parts)


def parse_columns(spec: str | None) -> dict[str, str]:
    """`--columns id=Ref,line=Text,direction=Notes` -> {role: header}."""
    out: dict[str, str] = {}
    if not spec:
        return out
    for part in spec.split(","):
        role, sep, header = part.partition("=")
        role = role.strip().lower()
        if not sep or not header.strip():
            raise InputError(f"--columns: {part.strip()!r} must be role=header (roles: {', '.join(ROLES)})")
        if role not in ROLES:
            raise InputError(f"--columns: unknown role {role!r} (roles: {', '.join(ROLES)})")
        out[role] = header.strip()
    return out


def _safe_id(value: str) -> str:
    return re.sub(r"[^\w.-]+", "_", value.strip()).strip("._")[:80]


def read_script_table(path, columns: dict[str, str] | None = None) -> list[ScriptRow]:
    """Rows of a CSV/TSV script (header row required; delimiter from the extension, else sniffed).

    Columns are found by their usual names or mapped with `columns` ({role: header}); `line` is
    required, `id` defaults to the row number. InputError names the file and row for bad input."""
    p = require_file(path, "script table")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a UTF-8 text file") from None
    delim = "\t" if p.suffix.lower() in (".tsv", ".tab") else "," if p.suffix.lower() == ".csv" else None
    if delim is None:
        try:
            delim = csv.Sniffer().sniff(text[:4096], delimiters=",\t;").delimiter
        except csv.Error:
            delim = ","
    reader = csv.reader(io.StringIO(text), delimiter=delim)
    rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"{p}: empty script table")
    header = [h.strip() for h in rows[0][1]]
    lower = {h.lower(): i for i, h in enumerate(header)}
    where: dict[str, int] = {}
    for role, name in (columns or {}).items():
        if name.lower() not in lower:
            raise InputError(f"{p}: --columns {role}={name}: no such column (header: {', '.join(header)})")
        where[role] = lower[name.lower()]
    for role in ROLES:
        if role not in where:
            i = next((lower[n] for n in _ROLE_NAMES[role] if n in lower), None)
            if i is not None and i not in where.values():
                where[role] = i
    if "line" not in where:
        raise InputError(f"{p}: no dialogue column (name it line/text/dialogue or map it: --columns line=HEADER; "
                         f"header: {', '.join(header)})")
    out: list[ScriptRow] = []
    seen: dict[str, int] = {}
    for n, (line_no, r) in enumerate(rows[1:], start=1):
        cell = {role: (r[i].strip() if i < len(r) else "") for role, i in where.items()}
        rid = _safe_id(cell.get("id") or f"{n:04d}")
        if not rid:
            raise InputError(f"{p}: row {line_no}: id {cell.get('id')!r} has no usable characters for a file name")
        if rid in seen:
            raise InputError(f"{p}: row {line_no}: id {rid!r} is also the id of row {seen[rid]}")
        seen[rid] = line_no
        if not cell.get("line") and not cell.get("direction"):
            raise InputError(f"{p}: row {line_no}: empty line")
        dur = None
        if cell.get("duration"):
            try:
                dur = float(cell["duration"])
            except ValueError:
                raise InputError(f"{p}: row {line_no}: duration {cell['duration']!r} is not a number") from None
            if not 0 < dur <= 4 * 3600:
                raise InputError(f"{p}: row {line_no}: duration must be positive seconds, got {dur:g}")
        out.append(ScriptRow(line_no, rid, cell.get("line", ""), cell.get("character", ""),
                             cell.get("direction", ""), cell.get("context", ""), dur))
    if not out:
        raise InputError(f"{p}: script table has a header but no rows")
    return out


def is_table(path) -> bool:
    return Path(path).suffix.lower() in (".csv", ".tsv", ".tab")
