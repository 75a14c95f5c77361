"""Preview video of an animation: the face rig shaded on the CPU (moderngl on Mesa's EGL software
renderer), frames piped raw into ffmpeg (H.264 + AAC mp4).

The rig's mesh is MediaPipe's canonical face, which has holes at the eyes and the mouth. To make
those read, each eye gets an eyeball (`faceparts.eyeballs`: 1.2 cm, white sclera, iris + pupil turned
by the eye yaw/pitch channels, or by the eyeLook* shapes when a take has no eye rotations) set
behind the lids, and the mouth gets an interior (`faceparts.mouth_parts`): upper teeth fixed to the
head, lower teeth and a tongue that ride the jaw (its rigid motion is fitted on the posed chin and
jaw line each frame, so they follow whatever the rig's jawOpen/jawLeft/... do; tongueOut pushes the
tongue forward), in front of a dark cavity: the inner-lip loop filled by a polygon pushed back
along the camera's rays, so no background shows past the lips. Where the lips meet (the rig's rest,
a /p b m/ closure) that polygon comes forward onto the lip line and takes the colour of the lip
crease, so a hair's-breadth gap between closed lips shows neither teeth nor the background.

Units are the rig's (cm), Y up, the face looks down +Z; head rotation turns everything about a
neck pivot. Frames are rendered upside down (flipped projection) so the bottom-up GL read-back
is already in image row order.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .arkit import BLENDSHAPE_NAMES, NUM_BLENDSHAPES, Animation, index
from .audio import ffmpeg_path
from .errors import DependencyError, DubtoolError, InputError
from .fileio import atomic_path

from .faceparts import IRIS_COS, PUPIL_COS, JawMotion, eyeballs, mouth_parts, tooth_shade
from .rig import INNER_LIPS, NECK_PIVOT, head_rotation_matrix

INNER_LIP_UPPER = INNER_LIPS[:11]  # 78 ... 13 ... 308
INNER_LIP_LOWER = INNER_LIPS[11:]

SKIN_RGB = (0.86, 0.66, 0.56)
MOUTH_DARK_RGB = (0.10, 0.02, 0.03)
TEETH_RGB = (0.74, 0.71, 0.64)
TONGUE_RGB = (0.62, 0.26, 0.28)
LIP_CREASE_RGB = (0.42, 0.27, 0.24)
# Inner-lip distance (cm) over which a column of the mouth goes from sealed (crease colour, on the
# lip line) to open (cavity colour, set back behind the teeth and tongue).
LIP_SEALED_CM, LIP_OPEN_CM = 0.03, 0.15
MOUTH_DEPTH_CM = 2.4


class RenderError(DubtoolError):
    """The renderer or the encoder failed."""


@dataclass(frozen=True)
class RenderOptions:
    """How a preview looks. Camera angles in degrees; zoom 1 frames the whole face."""

    width: int = 512
    height: int = 512
    fps: float | None = None  # None: the animation's own rate
    background: tuple[float, float, float] = (0.16, 0.17, 0.20)
    zoom: float = 1.0
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    samples: int = 0  # MSAA samples; 4 smooths edges at ~1/4 of the speed on llvmpipe
    crf: int = 20
    preset: str = "veryfast"

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise InputError(f"frame size must be even and at least 16x16, got {self.width}x{self.height}")
        if self.zoom <= 0:
            raise InputError(f"zoom must be positive, got {self.zoom}")
        if self.fps is not None and not (0 < self.fps <= 240):
            raise InputError(f"fps must be in 0..240, got {self.fps}")


def parse_size(text: str) -> tuple[int, int]:
    """'512x512' -> (512, 512)."""
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise InputError(f"bad size {text!r}; use WIDTHxHEIGHT, e.g. 512x512") from None
    return w, h


def parse_color(text: str) -> tuple[float, float, float]:
    """'#rrggbb' -> (r, g, b) in 0..1."""
    t = text.strip().lstrip("#")
    if len(t) != 6:
        raise InputError(f"bad colour {text!r}; use #rrggbb")
    try:
        return tuple(int(t[i:i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
    except ValueError:
        raise InputError(f"bad colour {text!r}; use #rrggbb") from None


# ---------------------------------------------------------------- pure geometry


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 float32 rotation for head-style angles (radians), the rig's convention."""
    return head_rotation_matrix(yaw, pitch, roll).astype(np.float32)


def _incidence(triangles: np.ndarray, num_vertices: int):
    """Sparse (V, F) vertex-triangle incidence matrix."""
    from scipy.sparse import csr_matrix

    f = len(triangles)
    rows = triangles.T.reshape(-1)
    cols = np.tile(np.arange(f), 3)
    return csr_matrix((np.ones(3 * f, np.float32), (rows, cols)), shape=(num_vertices, f))


def perspective(fov_y_deg: float, aspect: float, near: float, far: float) -> np.ndarray:
    f = 1.0 / math.tan(math.radians(fov_y_deg) / 2)
    return np.array([[f / aspect, 0, 0, 0], [0, f, 0, 0],
                     [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)], [0, 0, -1, 0]], np.float32)


CAMERA_FOV_DEG = 30.0
CAMERA_TARGET = (0.0, -0.6, 2.0)


def camera_position(options: RenderOptions, target=CAMERA_TARGET) -> np.ndarray:
    """Where the camera sits (rig space, cm): orbiting `target` at the options' yaw/pitch and zoom."""
    dist = 11.5 / math.tan(math.radians(CAMERA_FOV_DEG / 2)) / options.zoom
    r = rotation_matrix(math.radians(options.yaw_deg), math.radians(-options.pitch_deg), 0.0)
    return np.asarray(target, np.float32) + r @ np.array([0, 0, dist], np.float32)


def camera_matrix(options: RenderOptions, target=CAMERA_TARGET) -> np.ndarray:
    """View-projection (4x4) for a camera orbiting `target` at the options' yaw/pitch and zoom."""
    fov = CAMERA_FOV_DEG
    eye = camera_position(options, target)
    dist = float(np.linalg.norm(eye - np.asarray(target, np.float32)))
    fwd = np.asarray(target, np.float32) - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0, 1, 0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    view = np.eye(4, dtype=np.float32)
    view[0, :3], view[1, :3], view[2, :3] = right, up, -fwd
    view[:3, 3] = -view[:3, :3] @ eye
    proj = perspective(fov, options.width / options.height, 1.0, dist + 40.0)
    flip = np.diag([1.0, -1.0, 1.0, 1.0]).astype(np.float32)  # image rows top-down on read-back
    return flip @ proj @ view


def _uv_sphere(n_lat: int = 16, n_lon: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Unit sphere (positions = normals) with +Z as the pole the iris is painted around."""
    th = np.linspace(0, np.pi, n_lat + 1)
    ph = np.linspace(0, 2 * np.pi, n_lon + 1)
    t, p = np.meshgrid(th, ph, indexing="ij")
    pts = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    idx = []
    for i in range(n_lat):
        for j in range(n_lon):
            a, b = i * (n_lon + 1) + j, (i + 1) * (n_lon + 1) + j
            idx += [a, b, a + 1, a + 1, b, b + 1]
    return pts.astype(np.float32), np.asarray(idx, np.int32)


def mouth_opening(loop: np.ndarray, partners: np.ndarray) -> np.ndarray:
    """0 (sealed) .. 1 (open) for each inner-lip loop vertex, from its distance to the vertex across
    the mouth (upper lip row k <-> lower lip row k); lips that cross (upper below lower) are sealed."""
    nu = len(INNER_LIP_UPPER)  # the loop lists the upper row (corners included) first, then the lower row
    below = np.where(np.arange(len(loop)) < nu, partners[:, 1] - loop[:, 1], loop[:, 1] - partners[:, 1])
    d = np.where(below > 0, 0.0, np.linalg.norm(loop - partners, axis=1))
    t = np.clip((d - LIP_SEALED_CM) / (LIP_OPEN_CM - LIP_SEALED_CM), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def gaze_angles(values61: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """(yaw, pitch) radians for the left and right eye. Uses the eye rotation channels; where a
    take has none (all zero, as MediaPipe tracking gives), falls back to the eyeLook blendshapes."""
    v = values61
    out = []
    for side, sign in (("Left", 1.0), ("Right", -1.0)):
        yaw, pitch = float(v[index(f"{side}EyeYaw")]), float(v[index(f"{side}EyePitch")])
        if yaw == 0.0 and pitch == 0.0:
            look_in, look_out = v[index(f"eyeLookIn{side}")], v[index(f"eyeLookOut{side}")]
            up, down = v[index(f"eyeLookUp{side}")], v[index(f"eyeLookDown{side}")]
            # Looking "out" turns the left eye toward +x (subject's left), the right eye toward -x.
            yaw = sign * 0.6 * float(look_out - look_in)
            pitch = 0.45 * float(down - up)
        out.append((yaw, pitch))
    return out[0], out[1]


# ---------------------------------------------------------------- GL renderer

_VERT = """
#version 330
uniform mat4 mvp;
uniform mat4 model;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_color;
out vec3 v_normal;
out vec3 v_color;
out vec3 v_local;
void main() {
    gl_Position = mvp * model * vec4(in_pos, 1.0);
    v_normal = mat3(model) * in_normal;
    v_color = in_color;
    v_local = in_normal;
}
"""

_FRAG = """
#version 330
const int mode = MODE;     // 0 lit vertex colour x tint, 1 unlit vertex colour, 2 eyeball (one program each)
uniform vec3 view_dir;     // towards the camera
uniform mat3 eye_rot;      // eyeball orientation (for mode 2)
uniform vec3 tint;
in vec3 v_normal;
in vec3 v_color;
in vec3 v_local;
out vec4 f_color;
void main() {
    vec3 n = normalize(v_normal);
    if (dot(n, view_dir) < 0.0) n = -n;
    vec3 key = normalize(vec3(0.35, 0.55, 1.0));
    vec3 fill = normalize(vec3(-0.6, -0.1, 0.6));
    float diff = max(dot(n, key), 0.0);
    float diff2 = max(dot(n, fill), 0.0);
    vec3 h = normalize(key + view_dir);
    float spec = pow(max(dot(n, h), 0.0), 24.0);
    vec3 base = v_color * tint;
    if (mode == 1) { f_color = vec4(v_color, 1.0); return; }
    if (mode == 2) {
        float c = dot(normalize(v_local), eye_rot * vec3(0.0, 0.0, 1.0));
        base = vec3(0.92, 0.90, 0.86);
        if (c > IRIS_COS - 0.012) base = vec3(0.16, 0.11, 0.07);   // dark limbal ring
        if (c > IRIS_COS) base = vec3(0.36, 0.24, 0.13);
        if (c > PUPIL_COS) base = vec3(0.02, 0.02, 0.02);
        spec *= 2.0;
    }
    vec3 col = base * (0.28 + 0.72 * diff + 0.22 * diff2) + vec3(0.12) * spec;
    f_color = vec4(col, 1.0);
}
"""


def create_context():
    """A headless OpenGL 3.3 context on EGL (Mesa llvmpipe on machines without a GPU)."""
    try:
        import moderngl
    except ImportError:
        raise DependencyError("moderngl is not installed; run `pip install moderngl`") from None
    try:
        return moderngl.create_standalone_context(backend="egl")
    except Exception as e:  # moderngl raises plain Exceptions for missing libEGL / drivers
        raise DependencyError(f"no EGL OpenGL context ({str(e).strip().splitlines()[0][:120]}); install "
                              "libegl1 libegl-mesa0 libgl1-mesa-dri (Debian/Ubuntu)") from None


class FaceRenderer:
    """Renders frames of one face rig at a fixed size. `render(values61) -> (H, W, 4) uint8` RGBA
    (alpha is opaque), image rows top-down."""

    def __init__(self, rig, options: RenderOptions = RenderOptions(), ctx=None):
        self.rig = rig
        self.options = options
        self.ctx = ctx or create_context()
        ctx = self.ctx
        w, h = options.width, options.height
        samples = min(options.samples, ctx.max_samples) if options.samples > 1 else 0
        # RGBA targets: llvmpipe resolves and reads 4-byte pixels several times faster than RGB.
        self._ms = ctx.framebuffer(ctx.renderbuffer((w, h), 4, samples=samples),
                                   ctx.depth_renderbuffer((w, h), samples=samples))
        self._out = ctx.framebuffer(ctx.renderbuffer((w, h), 4)) if samples else self._ms
        # One program per material, the mode a compile-time constant: llvmpipe runs every branch of a
        # shader for every fragment (masked), so a shared shader would pay for the eyeball code on skin.
        frag = _FRAG.replace("IRIS_COS", f"{IRIS_COS:.4f}").replace("PUPIL_COS", f"{PUPIL_COS:.4f}")
        self.prog, self._unlit, self._eye = (ctx.program(vertex_shader=_VERT, fragment_shader=frag.replace("MODE", str(m)))
                                             for m in range(3))
        self.prog["tint"].value = (1.0, 1.0, 1.0)
        self._programs = (self.prog, self._unlit, self._eye)
        self.vp = camera_matrix(options)
        self._camera = camera_position(options)
        for prog in (self.prog, self._eye):
            prog["view_dir"].value = tuple(float(x) for x in self._camera_dir(options))
        for prog in self._programs:
            prog["mvp"].write(np.ascontiguousarray(self.vp.T, dtype="f4").tobytes())

        self.triangles = np.asarray(rig.triangles, np.int32)
        opening = getattr(rig, "opening_triangles", None)
        # The canonical mesh is closed over the eyes and lips; drop those faces so eyeballs and the
        # mouth interior show through.
        self._visible = self.triangles if opening is None else self.triangles[~np.asarray(opening, bool)]
        nv = len(rig.neutral)
        self._skin_buf = ctx.buffer(reserve=nv * 9 * 4)
        skin_idx = ctx.buffer(self._visible.astype("i4").tobytes())
        self._skin_colour = np.tile(np.asarray(SKIN_RGB, np.float32), (nv, 1))
        self.skin = ctx.vertex_array(self.prog, [(self._skin_buf, "3f 3f 3f", "in_pos", "in_normal", "in_color")], skin_idx)

        # Mouth cavity: fan around the loop centroid, dark (crease colour where the lips are sealed).
        self.lip_loop = np.asarray(INNER_LIP_UPPER + INNER_LIP_LOWER, np.int32)
        n = len(self.lip_loop)
        fan = np.array([[n, i, (i + 1) % n] for i in range(n)], np.int32)
        cols = np.array([MOUTH_DARK_RGB] * n + [tuple(0.5 * c for c in MOUTH_DARK_RGB)], np.float32)
        self._mouth_colour = cols
        # Each loop vertex's partner across the mouth (upper row k <-> lower row k; corners pair themselves).
        lower = (INNER_LIP_UPPER[0],) + tuple(reversed(INNER_LIP_LOWER)) + (INNER_LIP_UPPER[-1],)
        self._partner = np.asarray(lower + tuple(reversed(INNER_LIP_UPPER[1:-1])), np.int32)
        self._mouth_buf = ctx.buffer(reserve=(n + 1) * 9 * 4)
        # (Each program only binds the attributes its shader uses: the compiler drops the others.)
        self.mouth = ctx.vertex_array(self._unlit, [(self._mouth_buf, "3f 3x4 3f", "in_pos", "in_color")],
                                      ctx.buffer(fan.tobytes()))

        def teeth_mesh(verts, normals, tris):
            # Crown seams and the arch's shadowed sides baked into vertex colours (cheaper than in the shader).
            rgb = np.asarray(TEETH_RGB, np.float32) * tooth_shade(verts[:, 0], float(np.abs(verts[:, 0]).max()))[:, None]
            data = np.concatenate([verts, normals, rgb], 1)
            return ctx.vertex_array(self.prog, [(ctx.buffer(data.astype("f4").tobytes()), "3f 3f 3f", "in_pos",
                                                 "in_normal", "in_color")], ctx.buffer(tris.astype("i4").tobytes()))

        self.parts = mouth_parts(np.asarray(rig.neutral, np.float32))
        self.upper_teeth = teeth_mesh(*self.parts.upper_teeth)
        self.lower_teeth = teeth_mesh(*self.parts.lower_teeth)

        sphere, sidx = _uv_sphere()
        sdata = np.concatenate([sphere, sphere, np.ones_like(sphere)], 1).astype("f4")
        self.sphere = ctx.vertex_array(self._eye, [(ctx.buffer(sdata.tobytes()), "3f 3f 3x4", "in_pos", "in_normal")],
                                       ctx.buffer(sidx.tobytes()))
        tongue, tidx = _uv_sphere(8, 12)  # coarse: seen only through the lips
        tdata = np.concatenate([tongue, tongue, np.ones_like(tongue)], 1).astype("f4")
        self.tongue = ctx.vertex_array(self.prog, [(ctx.buffer(tdata.tobytes()), "3f 3f 3f", "in_pos", "in_normal",
                                                    "in_color")], ctx.buffer(tidx.tobytes()))
        self.eyes = eyeballs(np.asarray(rig.neutral, np.float32))
        self._tongue_out = index("tongueOut")
        self._jaw = JawMotion(rig.neutral, rig.deltas)
        self._bg = options.background
        self._neutral = np.asarray(rig.neutral, np.float32)
        self._basis = np.ascontiguousarray(np.asarray(rig.deltas, np.float32).reshape(NUM_BLENDSHAPES, -1))
        self._incidence = _incidence(self.triangles, len(self._neutral))

    def _normals(self, verts: np.ndarray) -> np.ndarray:
        """Area-weighted vertex normals (same result as rig.vertex_normals, sparse for speed)."""
        t = self.triangles
        fn = np.cross(verts[t[:, 1]] - verts[t[:, 0]], verts[t[:, 2]] - verts[t[:, 0]])
        n = self._incidence @ fn
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)

    @staticmethod
    def _camera_dir(options: RenderOptions) -> np.ndarray:
        r = rotation_matrix(math.radians(options.yaw_deg), math.radians(-options.pitch_deg), 0.0)
        return r @ np.array([0, 0, 1], np.float32)

    def _head_model(self, values61: np.ndarray) -> np.ndarray:
        r = rotation_matrix(float(values61[52]), float(values61[53]), float(values61[54]))
        m = np.eye(4, dtype=np.float32)
        m[:3, :3] = r
        m[:3, 3] = NECK_PIVOT - r @ NECK_PIVOT
        return m

    @staticmethod
    def _set(prog, name: str, mat: np.ndarray) -> None:
        prog[name].write(np.ascontiguousarray(mat.T, dtype="f4").tobytes())

    def render(self, values61: np.ndarray) -> np.ndarray:
        values61 = np.asarray(values61, np.float32)
        verts = (values61[:NUM_BLENDSHAPES] @ self._basis).reshape(-1, 3) + self._neutral
        normals = self._normals(verts)
        self._skin_buf.write(np.concatenate([verts, normals, self._skin_colour], 1).astype("f4").tobytes())

        loop = verts[self.lip_loop]
        opening = mouth_opening(loop, verts[self._partner])
        centre = loop.mean(0)
        pts = np.concatenate([loop, centre[None]], 0)
        head = self._head_model(values61)
        # Open columns sit behind the lips, pushed back along the camera's line of sight so that they
        # still project onto the lip edge (no background shows past it), and a little wider; sealed
        # columns stay on the lip line.
        pts[:-1, :2] += 0.08 * opening[:, None] * (loop[:, :2] - centre[:2])
        eye = head[:3, :3].T @ (self._camera - head[:3, 3])  # the camera in the head's frame
        ray = pts - eye
        ray /= np.linalg.norm(ray, axis=1, keepdims=True)
        depth = np.append(MOUTH_DEPTH_CM * opening, (MOUTH_DEPTH_CM + 0.6) * opening.max())
        pts += depth[:, None] * ray
        open_ = np.append(opening, opening.max())[:, None]
        colour = open_ * self._mouth_colour + (1.0 - open_) * np.asarray(LIP_CREASE_RGB, np.float32)
        mouth = np.concatenate([pts, np.tile([[0, 0, 1]], (len(pts), 1)), colour], 1)
        self._mouth_buf.write(mouth.astype("f4").tobytes())
        jaw = head @ self._jaw.transform(values61)
        # tongueOut slides the tongue forward over the lower teeth and lip, lifted, narrowed and flattened.
        out = float(np.clip(values61[self._tongue_out], 0.0, 1.0))
        tongue = np.diag(np.append(self.parts.tongue_radii * [1.0 - 0.3 * out, 1.0 - 0.35 * out, 1.0], 1.0)).astype(np.float32)
        tongue[:3, 3] = self.parts.tongue_centre + np.array([0.0, 0.95 * out, self.parts.tongue_out_cm * out], np.float32)

        fbo = self._ms
        fbo.use()
        self.ctx.enable(self.ctx.DEPTH_TEST)
        fbo.clear(*self._bg, 1.0)
        lit = self.prog
        self._set(lit, "model", head)
        self.skin.render()
        self._set(self._unlit, "model", head)
        self.mouth.render()
        self.upper_teeth.render()
        self._set(lit, "model", jaw)
        self.lower_teeth.render()
        lit["tint"].value = TONGUE_RGB
        self._set(lit, "model", jaw @ tongue)
        self.tongue.render()
        lit["tint"].value = (1.0, 1.0, 1.0)
        for ball, (yaw, pitch) in zip(self.eyes, gaze_angles(values61)):
            rot = rotation_matrix(yaw, pitch, 0.0)
            self._eye["eye_rot"].write(np.ascontiguousarray(rot.T, dtype="f4").tobytes())
            m = np.eye(4, dtype=np.float32)
            m[:3, :3] *= ball.radius
            m[:3, 3] = ball.centre
            self._set(self._eye, "model", head @ m)
            self.sphere.render()
        if self._out is not self._ms:
            self.ctx.copy_framebuffer(self._out, self._ms)
        data = self._out.read(components=4, alignment=1)
        return np.frombuffer(data, np.uint8).reshape(self.options.height, self.options.width, 4)

    def release(self) -> None:
        self.ctx.release()


# ---------------------------------------------------------------- encoding


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if not exe:
        raise DependencyError("ffmpeg not found on PATH; install it (apt-get install ffmpeg)")
    return exe


def media_duration_s(path: str | os.PathLike) -> float:
    """Duration of an audio/video file by ffprobe, or an InputError if it can't be read."""
    exe = shutil.which("ffprobe")
    if not exe:
        raise DependencyError("ffprobe not found on PATH; install ffmpeg")
    r = subprocess.run([exe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", ffmpeg_path(path)],
                       capture_output=True, text=True)
    try:
        return float(r.stdout.strip().splitlines()[0])
    except (ValueError, IndexError):
        last = (r.stderr.strip().splitlines() or ["no duration"])[-1]
        raise InputError(f"{path}: cannot read media file ({last})") from None


class VideoEncoder:
    """ffmpeg subprocess taking raw RGB frames on stdin: H.264 yuv420p (+ AAC audio padded/trimmed
    to `duration_s`), `+faststart` so the mp4 plays while downloading."""

    def __init__(self, path: Path, width: int, height: int, fps: float, duration_s: float,
                 audio: str | os.PathLike | None = None, crf: int = 20, preset: str = "veryfast"):
        cmd = [_ffmpeg(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgba",
               "-s", f"{width}x{height}", "-r", f"{fps:.6f}", "-i", "-"]
        if audio is not None:
            cmd += ["-i", ffmpeg_path(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "160k",
                    "-af", "apad", "-t", f"{duration_s:.6f}"]
        cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
                "-movflags", "+faststart", "-f", "mp4", ffmpeg_path(path)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            self.close()

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        rc = self.proc.wait()
        if rc != 0:
            last = (err.strip().splitlines() or [f"exit status {rc}"])[-1]
            raise RenderError(f"ffmpeg failed: {last}")

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class VideoFrames:
    """Sequential RGB frames of a video, scaled to (width, height), decoded by an ffmpeg pipe;
    `at(t_s)` returns the frame shown at time t (times must not go backwards)."""

    def __init__(self, path: str | os.PathLike, width: int, height: int,
                 crop: tuple[int, int, int, int] | None = None):
        r = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=r_frame_rate",
                            "-of", "csv=p=0", ffmpeg_path(path)], capture_output=True, text=True)
        try:
            num, den = r.stdout.strip().split("/")
            self.fps = float(num) / float(den)
        except ValueError:
            raise InputError(f"{path}: no video stream") from None
        self.size = (width, height)
        if crop is not None:  # (x, y, w, h) in source pixels: the face, framed like the render
            vf = f"crop={crop[2]}:{crop[3]}:{crop[0]}:{crop[1]},scale={width}:{height}"
        else:  # whole frame, aspect kept, letterboxed
            vf = (f"scale={width}:{height}:force_original_aspect_ratio=decrease,"
                  f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2")
        self.proc = subprocess.Popen([_ffmpeg(), "-loglevel", "error", "-i", ffmpeg_path(path), "-vf", vf,
                                      "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._index = -1
        self._frame = np.zeros((height, width, 3), np.uint8)

    def at(self, t_s: float) -> np.ndarray:
        want = max(0, int(t_s * self.fps + 1e-6))
        n = self.size[0] * self.size[1] * 3
        while self._index < want:
            buf = self.proc.stdout.read(n)
            if len(buf) < n:
                break  # past the end: hold the last frame
            self._frame = np.frombuffer(buf, np.uint8).reshape(self.size[1], self.size[0], 3)
            self._index += 1
        return self._frame

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


# ---------------------------------------------------------------- the job


@dataclass
class RenderResult:
    path: Path
    num_frames: int
    fps: float
    width: int
    height: int
    render_s: float = 0.0
    total_s: float = 0.0
    warnings: list[str] = field(default_factory=list)


VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm")


@dataclass(frozen=True)
class Comparison:
    """What `--compare` shows beside the dub: the source video's frames (cropped to the face when
    `video_crop` is given), the source animation rendered on the rig, or both; and the timing map
    that puts source time under dub time."""

    source: Animation | None
    timemap: object | None = None  # dubtool.timemap.TimeMap
    source_video: str | None = None
    channels: tuple[str, ...] = ("jawOpen", "browInnerUp", "eyeBlinkLeft")
    video_crop: tuple[int, int, int, int] | None = None  # (x, y, w, h) source pixels

    def __post_init__(self) -> None:
        if self.source is None and self.source_video is None:
            raise InputError("--compare needs a source animation (.perf/.csv) or a source video")


# The rig's face (forehead top to chin, y +8.3 .. -9.4 cm) fills this share of the frame height at
# zoom 1: the crop of a source video around the tracked face uses it so both faces show alike.
FACE_HEIGHT_SHARE = 0.77


def face_crop(landmarks_image: np.ndarray, face_found: np.ndarray, image_w: int, image_h: int,
              aspect: float, zoom: float = 1.0) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) pixels of a fixed crop of the source video framing the tracked face like the
    preview's camera (median face box over the tracked frames), clamped inside the image; None when
    no frame has a face."""
    found = np.asarray(face_found, bool)
    if not found.any():
        return None
    lm = np.asarray(landmarks_image, np.float64)[found]
    x0, x1 = np.median(lm[..., 0].min(1)) * image_w, np.median(lm[..., 0].max(1)) * image_w
    y0, y1 = np.median(lm[..., 1].min(1)) * image_h, np.median(lm[..., 1].max(1)) * image_h
    h = (y1 - y0) / FACE_HEIGHT_SHARE / zoom
    w = h * aspect
    scale = min(1.0, image_w / w, image_h / h)
    w, h = w * scale, h * scale
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    x = int(round(min(max(cx - w / 2, 0.0), image_w - w)))
    y = int(round(min(max(cy - h / 2, 0.0), image_h - h)))
    return x, y, max(2, int(w) & ~1), max(2, int(h) & ~1)


def source_on_dub_timeline(source: Animation, dub_times_s: np.ndarray, timemap=None) -> np.ndarray:
    """(T, 61) source values at the source times that the dub times map to (identity without a map)."""
    src_t = timemap.source_time(dub_times_s) if timemap is not None else np.asarray(dub_times_s)
    src_t = np.clip(src_t, 0.0, max(0.0, source.duration_s - 1.0 / source.fps))
    tt = source.times_s
    return np.stack([np.interp(src_t, tt, source.values[:, c]) for c in range(source.values.shape[1])], 1).astype(
        np.float32)


def render_video(anim: Animation, out_path: str | os.PathLike, audio: str | os.PathLike | None = None,
                 options: RenderOptions = RenderOptions(), compare: Comparison | None = None, rig=None,
                 progress: Callable[[int, int], None] | None = None) -> RenderResult:
    """Render `anim` (optionally beside a source performance) to an mp4 with the dub audio."""
    import time

    from .rig import load_rig

    t0 = time.perf_counter()
    if options.fps is not None:
        anim = anim.resampled(options.fps)
    fps = anim.fps
    n = anim.num_frames
    duration = n / fps
    warnings: list[str] = []
    if audio is not None:
        a_dur = media_duration_s(audio)
        if abs(a_dur - duration) > 1.0 / fps:
            how = "padded with silence" if a_dur < duration else "trimmed"
            warnings.append(f"audio is {a_dur:.2f} s, animation {duration:.2f} s: audio {how} to the animation")
    rig = rig or load_rig()
    renderer = FaceRenderer(rig, options)
    w, h = options.width, options.height
    frame_w, frame_h = w, h
    strip = video = None
    src_values = None
    panels = ["dub"]
    if compare is not None:
        from .plots import CurveStrip

        # Left to right: the source video, the source animation on the rig, the dub.
        panels = (["video"] if compare.source_video else []) + (["source"] if compare.source is not None else []) + panels
        if compare.source is not None:
            src_values = source_on_dub_timeline(compare.source, anim.times_s, compare.timemap)
        strip_h = max(96, (h // 3) & ~1)
        frame_w, frame_h = len(panels) * w, h + strip_h
        strip = CurveStrip(anim, src_values, compare.channels, frame_w, strip_h, timemap=compare.timemap)
        if compare.source_video:
            video = VideoFrames(compare.source_video, w, h, compare.video_crop)
    out_path = Path(out_path)
    render_s = 0.0
    try:
        with atomic_path(out_path, suffix=".mp4") as tmp:
            enc = VideoEncoder(tmp, frame_w, frame_h, fps, duration, audio, options.crf, options.preset)
            try:
                frame = np.full((frame_h, frame_w, 4), 255, np.uint8)
                for i in range(n):
                    t1 = time.perf_counter()
                    face = renderer.render(anim.values[i])
                    if compare is None:
                        frame = face
                    else:
                        frame[:h, (len(panels) - 1) * w:] = face
                        if src_values is not None:
                            k = panels.index("source")
                            frame[:h, k * w:(k + 1) * w] = renderer.render(src_values[i])
                        if video is not None:
                            src_t = compare.timemap.source_time(i / fps) if compare.timemap is not None else i / fps
                            frame[:h, :w, :3] = video.at(float(src_t))
                        frame[h:, :, :3] = strip.frame(i / fps)
                    render_s += time.perf_counter() - t1
                    enc.write(frame)
                    if progress is not None:
                        progress(i + 1, n)
                enc.close()
            except BaseException:
                enc.abort()
                raise
    finally:
        renderer.release()
        if video is not None:
            video.close()
    return RenderResult(out_path, n, fps, frame_w, frame_h, render_s, time.perf_counter() - t0, warnings)


def render_frames(anim: Animation, options: RenderOptions = RenderOptions(), rig=None) -> Iterator[np.ndarray]:
    """Rendered frames of `anim` as (H, W, 3) uint8 arrays (for tests, benchmarks and stills)."""
    from .rig import load_rig

    renderer = FaceRenderer(rig or load_rig(), options)
    try:
        for row in anim.values:
            yield renderer.render(row)[..., :3].copy()
    finally:
        renderer.release()


__all__ = ["RenderOptions", "FaceRenderer", "render_video", "render_frames", "Comparison", "face_crop", "parse_size",
           "parse_color", "BLENDSHAPE_NAMES"]
