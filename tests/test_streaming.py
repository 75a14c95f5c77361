"""Long inputs in bounded memory (issue 15, item 7): every windowed or blockwise computation equals the
whole-input one it replaces, so streaming changes memory, not results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dubtool import audio as audiomod
from dubtool.arkit import NUM_CHANNELS, Animation

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """24 s of real speech: the bundled French dub three times over."""
    return np.concatenate([audiomod.load_audio(REPO / "examples" / "dub_fr.wav").samples] * 3)


@pytest.mark.parametrize("fps,subframes", [(30.0, 3), (29.97, 1), (24.0, 3)])
def test_mel_features_by_window_equal_the_whole_file(speech, fps, subframes, monkeypatch):
    whole = audiomod.mel_features(speech, 16000, fps, subframes=subframes)
    n = audiomod.mel_frame_count(len(speech), 16000, fps)
    assert whole.shape[0] == n
    monkeypatch.setattr(audiomod, "MEL_BLOCK_STFT_FRAMES", 250)  # STFT blocks join inside the windows too
    for width in (97, 400):
        rows = np.concatenate([audiomod.mel_features_window(speech, 16000, fps, (a, a + width), subframes=subframes)
                               for a in range(0, n, width)])
        assert rows.shape == whole.shape
        np.testing.assert_allclose(rows, whole, rtol=0, atol=1e-4)
    for a in (0, 1, n // 2, n - 1):  # single rows at the file's ends and inside
        row = audiomod.mel_features_window(speech, 16000, fps, (a, a + 1), subframes=subframes)
        np.testing.assert_allclose(row, whole[a:a + 1], rtol=0, atol=1e-4)


def test_energy_by_blocks_equals_one_cumulative_sum(speech, monkeypatch):
    monkeypatch.setattr(audiomod, "ENERGY_BLOCK_SAMPLES", 1 << 22)  # the whole 24 s in one block
    whole = audiomod.rms_envelope(speech, 16000, 30.0)
    monkeypatch.setattr(audiomod, "ENERGY_BLOCK_SAMPLES", 4000)
    blocks = audiomod.rms_envelope(speech, 16000, 30.0)
    np.testing.assert_allclose(blocks, whole, rtol=1e-6, atol=1e-9)

    from dubtool.align import segment_speech

    short = audiomod.Audio(speech, 16000)
    monkeypatch.setattr(audiomod, "ENERGY_BLOCK_SAMPLES", 1 << 22)
    one = segment_speech(short)
    monkeypatch.setattr(audiomod, "ENERGY_BLOCK_SAMPLES", 5000)
    assert segment_speech(short) == one and len(one) >= 3


def test_generator_in_groups_equals_the_whole_take(speech, tiny_model):
    """Groups of chunks sampled with a margin of steps + 2 chunks give the whole-take result (the
    crossfade couples neighbouring chunks only, one chunk per ODE step)."""
    from dubtool.generate import _chunk_starts, load_model

    gen = load_model(tiny_model)
    audio = audiomod.Audio(speech, 16000)
    n = int(round(audio.duration_s * gen.fps))
    rng = np.random.default_rng(0)
    kp = 0.01 * rng.normal(size=(n, gen.dims.n_keypoints)).astype(np.float32)
    style = np.zeros(gen.dims.style_dim, np.float32)
    steps = gen.sampler.steps
    whole = gen.generate(audio, kp, style, seed=3).values
    starts = _chunk_starts(n, gen.sampler.chunk_frames, gen.sampler.overlap_frames)
    assert len(starts) >= 5
    asked = []

    def keypoints_of(a, b):  # the keypoints of each group's frames only, asked for in order
        asked.append((a, b))
        return kp[a:b]

    for group in (1, 2):
        asked.clear()
        blocks = list(gen._generate_grouped(audio, keypoints_of, style, n, starts, group, steps + 2, steps,
                                            gen.sampler.guidance, 3))
        assert [a for a, _ in blocks] == sorted(a for a, _ in blocks) and blocks[0][0] == 0
        assert len(asked) == len(blocks) and asked == sorted(asked)
        grouped = np.concatenate([v for _, v in blocks])
        grouped[:, :52] = np.clip(grouped[:, :52], 0, 1)
        np.testing.assert_allclose(grouped, whole, rtol=0, atol=1e-4)


def test_noise_drawn_in_pieces_is_the_whole_takes_noise(tiny_model, monkeypatch):
    from dubtool import generate

    monkeypatch.setattr(generate._NoiseStream, "PIECE", 48)
    # torch's sampler (the tiny checkpoint has no ONNX sidecar) and ONNX Runtime's numpy replica of it
    for gen in (generate.load_model(tiny_model), generate.load_model(backend="onnx")):
        for n in (500, 501, 517):
            whole = np.asarray(gen._noise(1, n, 7))
            stream = generate._NoiseStream(gen, n, 7)
            parts = [stream.frames(0, 100), stream.frames(60, 260), stream.frames(200, n)]
            np.testing.assert_array_equal(np.asarray(parts[0]), whole[:, :100])
            np.testing.assert_array_equal(np.asarray(parts[1]), whole[:, 60:260])
            np.testing.assert_array_equal(np.asarray(parts[2]), whole[:, 200:n])


def test_csv_written_in_blocks_is_the_same_text(tmp_path, monkeypatch):
    from dubtool import livelink

    rng = np.random.default_rng(1)
    anim = Animation(rng.uniform(0, 1, (100, NUM_CHANNELS)).astype(np.float32), 30.0, 3600.0)
    text = livelink.to_csv_text(anim)
    monkeypatch.setattr(livelink, "CSV_BLOCK_ROWS", 7)
    livelink.write_csv(anim, tmp_path / "a.csv")
    assert (tmp_path / "a.csv").read_text() == text == livelink.to_csv_text(anim)


def test_zero_phase_smoothing_by_column_blocks_is_unchanged():
    from dubtool.smoothing import OneEuroConfig, one_euro, one_euro_zero_phase

    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 478, 3)).astype(np.float32)
    cfg = OneEuroConfig(1.5, 0.5)
    expected = one_euro(x[::-1], 30.0, cfg, 0.01)[::-1] + one_euro(x, 30.0, cfg, 0.01)
    expected *= 0.5
    inplace = x.copy()
    one_euro_zero_phase(inplace, 30.0, cfg, scale=0.01, out=inplace, block_columns=100)
    np.testing.assert_array_equal(inplace, expected)


def test_a_windowed_dub_reads_like_the_array(speech, tmp_path, monkeypatch):
    """A recording past STREAM_AUDIO_S stays in a temporary file: slices, indices, spans and the
    windowed readers (energy, mel rows) give what the in-memory samples give."""
    path = audiomod.write_wav(audiomod.Audio(speech, 16000), tmp_path / "dub.wav")
    whole = audiomod.load_audio(path).samples
    monkeypatch.setattr(audiomod, "STREAM_AUDIO_S", 5)
    x = audiomod.load_audio(path, windowed=True).samples
    assert isinstance(x, audiomod.SampleFile) and len(x) == len(whole)
    assert isinstance(audiomod.load_audio(path).samples, np.ndarray)  # only where asked for
    for key in (slice(None), slice(100, 5000), slice(-300, None), slice(0, None, 7), slice(None, None, -3)):
        np.testing.assert_array_equal(x[key], whole[key])
    idx = np.array([[5, 70000], [3, len(whole) - 1]])
    np.testing.assert_array_equal(x[idx], whole[idx])
    assert x[-1] == whole[-1] and x[12345] == whole[12345]
    span = x.span(16000, 48000)
    np.testing.assert_array_equal(np.asarray(span), whole[16000:48000])
    np.testing.assert_array_equal(span[10:20], whole[16010:16020])
    np.testing.assert_array_equal(audiomod.rms_envelope(x, 16000, 30.0), audiomod.rms_envelope(whole, 16000, 30.0))
    for frames in ((0, 50), (300, 420)):
        np.testing.assert_array_equal(audiomod.mel_features_window(x, 16000, 30.0, frames),
                                      audiomod.mel_features_window(whole, 16000, 30.0, frames))


@pytest.mark.parametrize("model_fps,fps,n_extra", [(30.0, 60.0, 0), (30.0, 23.976, 1), (30.0, 24.0, -1), (30.0, 30.0, 0)])
def test_output_blocks_equal_the_whole_take_resampled(model_fps, fps, n_extra):
    """localize's block-by-block output (resampling, fitting to the span's frames, clamping) is the
    whole animation's, frame for frame."""
    from dubtool.localize import _fit_frames, _OutputFrames

    rng = np.random.default_rng(3)
    n_model = 331
    values = rng.uniform(-0.2, 1.2, (n_model, NUM_CHANNELS)).astype(np.float32)
    n_out = max(1, int(round(n_model / model_fps * fps))) + n_extra
    whole = Animation(values, model_fps).resampled(fps)
    expected = Animation(_fit_frames(whole.values, n_out), fps).clamped().values
    out = _OutputFrames(model_fps, fps, n_model, n_out)
    blocks, a = [], 0
    for size in (1, 40, 2, 97, 191):
        blocks += list(out.push(a, values[a:a + size]))
        a += size
    blocks += list(out.finish())
    assert [j for j, _ in blocks] == list(np.cumsum([0] + [len(v) for _, v in blocks[:-1]]))
    np.testing.assert_array_equal(np.concatenate([v for _, v in blocks]), expected)


def test_csv_written_as_blocks_come_is_write_csvs_text(tmp_path):
    from dubtool import livelink

    rng = np.random.default_rng(4)
    rates = []
    for fps, start, n in ((30.0, 3600.0, 300), (60.0, 10.0, 300), (30.0, 0.0, 12)):  # the last: 30 fps cells
        anim = Animation(rng.uniform(0, 1, (n, NUM_CHANNELS)).astype(np.float32), fps, start)
        livelink.write_csv(anim, tmp_path / "whole.csv")
        with livelink.CsvBlockWriter(tmp_path / "blocks.csv", fps, n, start) as w:
            for a, b in ((0, 1), (1, 120), (120, n)):
                w.write(anim.values[a:b])
        assert (tmp_path / "blocks.csv").read_text() == (tmp_path / "whole.csv").read_text()
        rates.append(livelink.timecode_rate_for(start, fps, n))
    assert rates == [60.0, 60.0, 30.0]
    with pytest.raises(RuntimeError):  # a failure part-way leaves no file
        with livelink.CsvBlockWriter(tmp_path / "failed.csv", 30.0, 300) as w:
            w.write(anim.values[:100])
            raise RuntimeError("boom")
    with pytest.raises(ValueError):  # so does a short take
        with livelink.CsvBlockWriter(tmp_path / "short.csv", 30.0, 300) as w:
            w.write(anim.values[:100])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocks.csv", "whole.csv"]


def test_long_dub_streamed_to_the_csv_equals_the_whole_take(speech, tmp_path, tiny_model, monkeypatch):
    """A dub past STREAM_AUDIO_S, sampled in generator groups and written to the CSV as the frames
    come, gives the CSV and metrics of the whole take localized at once in memory."""
    import json

    from dubtool import generate, localize as loc
    from dubtool.performance import save_performance

    sys_path = str(REPO / "benchmarks")
    monkeypatch.syspath_prepend(sys_path)
    from bench_localize import performance_for

    src = tmp_path / "src.perf"
    save_performance(performance_for(audiomod.Audio(speech[:16000 * 10], 16000)), src)
    dub = audiomod.write_wav(audiomod.Audio(speech, 16000), tmp_path / "dub.wav")
    gen = generate.load_model(tiny_model)
    gen.sampler = generate.SamplerConfig(steps=1, chunk_frames=40, overlap_frames=8)
    opts = loc.LocalizeOptions(fps=24.0)

    monkeypatch.setattr(generate, "GROUP_CHUNKS", 10_000)  # the reference: one group, dub in memory
    whole = loc.localize_files(src, dub, tmp_path / "whole.csv", opts, generator=gen)
    monkeypatch.setattr(generate, "GROUP_CHUNKS", 1)  # groups of 12 chunks (~16 s): two groups
    monkeypatch.setattr(audiomod, "STREAM_AUDIO_S", 5)
    seen = []
    real = gen._generate_grouped
    monkeypatch.setattr(gen, "_generate_grouped", lambda *a, **k: seen.append(1) or real(*a, **k))
    streamed = loc.localize_files(src, dub, tmp_path / "streamed.csv", opts, generator=gen)
    assert seen, "the dub was not sampled in groups"
    a = np.loadtxt(tmp_path / "whole.csv", delimiter=",", skiprows=1, usecols=range(2, 63))
    b = np.loadtxt(tmp_path / "streamed.csv", delimiter=",", skiprows=1, usecols=range(2, 63))
    assert a.shape == b.shape == (whole["frames"], NUM_CHANNELS)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-4)
    tcs = [ln.split(",")[0] for ln in (tmp_path / "whole.csv").read_text().splitlines()]
    assert tcs == [ln.split(",")[0] for ln in (tmp_path / "streamed.csv").read_text().splitlines()]
    assert json.dumps(streamed["metrics"]) == json.dumps(whole["metrics"])


def test_zero_phase_smoothing_by_time_blocks_is_unchanged():
    """The block-by-block (time) One Euro of a take kept on disk equals the in-memory one value for value,
    also when it writes where it reads."""
    from dubtool.smoothing import OneEuroConfig, one_euro_zero_phase, one_euro_zero_phase_blocks

    rng = np.random.default_rng(5)
    x = rng.normal(size=(203, 7, 3)).astype(np.float32)
    cfg = OneEuroConfig(1.5, 0.5)
    scale = rng.uniform(0.1, 1.0, (7, 3))
    expected = one_euro_zero_phase(x, 30.0, cfg, scale=scale)
    y = x.copy()

    def write(a, v):
        y[a:a + len(v)] = v

    one_euro_zero_phase_blocks(lambda a, b: y[a:b], write, len(y), (7, 3), 30.0, cfg, scale, block_frames=16)
    np.testing.assert_array_equal(y, expected)


def test_extract_on_disk_equals_extract_in_memory(tmp_path, monkeypatch):
    """A take past IN_MEMORY_FRAMES (landmarks, blendshapes and poses in temporary files, audio too,
    post-processed and saved block by block) gives the .perf of the in-memory extraction, gaps and
    smoothing included."""
    from dubtool import diskarray, extract as ex, performance as pf, testmedia as tm

    video = tm.make_face_video(tmp_path / "gaps.mp4", tm.Motion(jaw=0.6 * np.sin(np.arange(40) / 4) ** 2), 25.0,
                               (256, 192), audio=tm.tone_audio(40 / 25.0), blank_frames=[8, 9, 10] + list(range(20, 36)))
    memory = ex.extract(video)
    pf.save_performance(memory, tmp_path / "memory.perf")
    monkeypatch.setattr(ex, "IN_MEMORY_FRAMES", 0)
    monkeypatch.setattr(ex, "POST_BLOCK_FRAMES", 7)
    monkeypatch.setattr(ex._FrameBuffers, "BATCH", 5)
    monkeypatch.setattr(audiomod, "STREAM_AUDIO_S", 0)
    monkeypatch.setattr(pf, "SAVE_BLOCK_ROWS", 3)
    disk = ex.extract(video, ex.ExtractOptions(channels_on_disk=True))  # what the extract command asks for
    assert isinstance(disk.landmarks_image, diskarray.DiskArray) and isinstance(disk.audio.samples, diskarray.DiskArray)
    assert isinstance(disk.animation.values, diskarray.DiskArray)
    assert disk.meta["gaps"] == memory.meta["gaps"] and len(memory.meta["gaps"]) == 2
    pf.save_performance(disk, tmp_path / "disk.perf")
    a, b = pf.load_performance(tmp_path / "memory.perf"), pf.load_performance(tmp_path / "disk.perf")
    for name in ("landmarks_image", "landmarks_canonical", "head_pose", "face_found", "confidence"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    np.testing.assert_array_equal(a.animation.values, b.animation.values)
    np.testing.assert_array_equal(a.audio.samples, b.audio.samples)
    from dubtool.livelink import write_csv

    write_csv(memory.animation, tmp_path / "memory.csv")
    write_csv(disk.animation, tmp_path / "disk.csv")  # the CSV of channels left on disk: the same text
    assert (tmp_path / "disk.csv").read_text() == (tmp_path / "memory.csv").read_text()


def test_line_metrics_keep_no_block_of_frames_alive():
    """localize's metrics keep per-frame curves only: a block of output frames they were given is freed once
    the caller drops it (a column view of each block kept an hour of output alive, 26 MB)."""
    import gc
    import weakref

    from dubtool.localize import _LineMetrics
    from dubtool.timemap import uniform_timemap

    rng = np.random.default_rng(0)
    src = Animation(rng.uniform(0, 1, (90, NUM_CHANNELS)).astype(np.float32), 30.0)
    acc = _LineMetrics(src, uniform_timemap(3.0, 6.0), 0.0, 30.0, with_gap=False)
    refs = []
    for j0 in range(0, 180, 60):
        block = rng.uniform(0, 1, (60, NUM_CHANNELS)).astype(np.float32)
        acc.add(j0, block)
        refs.append(weakref.ref(block))
        del block
    gc.collect()
    assert all(r() is None for r in refs)
    assert acc.n == 180 and sum(len(b) for b in acc.brow_out) == 180


@pytest.fixture(scope="module")
def equalizing_model(tmp_path_factory):
    """A tiny untrained checkpoint that equalises its audio features (dims.mel_cmn = 1) onto a made-up
    corpus speech spectrum."""
    from dubtool.generate import ModelDimensions, SamplerConfig, build_net, identity_stats, save_checkpoint

    dims = ModelDimensions(d_model=32, n_layers=1, n_heads=2, ff_mult=2, audio_subframes=3, mel_cmn=1.0)
    stats = identity_stats(dims)
    stats["mel_ref"] = np.linspace(-6.0, -2.0, dims.mel_width).astype(np.float32)
    path = tmp_path_factory.mktemp("model") / "equalizing.pt"
    save_checkpoint(path, build_net(dims), dims, SamplerConfig(steps=2), stats, {"name": "tiny-equalizing"})
    return str(path)


def test_equalized_features_do_not_see_a_microphones_colour(speech, equalizing_model):
    """The same speech through a differently coloured channel (a static per-band gain) reaches the network
    as the same features; the take's speech spectrum lands on the checkpoint's mel_ref."""
    from dubtool.generate import load_model, normalize_mel, speech_spectrum

    gen = load_model(equalizing_model, backend="torch")
    mel = normalize_mel(audiomod.mel_features(speech, 16000, gen.fps, subframes=3))
    colour = np.tile(np.linspace(1.5, -2.5, 80, dtype=np.float32), 3)  # bright mic vs dull mic, in log power
    plain, coloured = gen.equalize(mel), gen.equalize(mel + colour)
    np.testing.assert_allclose(coloured, plain, rtol=0, atol=1e-4)
    np.testing.assert_allclose(speech_spectrum(plain), gen.stats()["mel_ref"], rtol=0, atol=1e-4)
    assert np.abs(plain - mel).max() > 1.0  # it did move the features


def test_equalizing_generator_in_groups_equals_the_whole_take(speech, equalizing_model):
    """Streamed long takes measure the speech spectrum over the whole take (a second pass), as a whole
    take does: the grouped result equals the whole one."""
    from dubtool.generate import _chunk_starts, load_model

    gen = load_model(equalizing_model, backend="torch")
    audio = audiomod.Audio(speech, 16000)
    n = int(round(audio.duration_s * gen.fps))
    kp = np.zeros((n, gen.dims.n_keypoints), np.float32)
    style = np.zeros(gen.dims.style_dim, np.float32)
    whole = gen.generate(audio, kp, style, seed=3).values
    starts = _chunk_starts(n, gen.sampler.chunk_frames, gen.sampler.overlap_frames)
    steps = gen.sampler.steps
    blocks = list(gen._generate_grouped(audio, lambda a, b: kp[a:b], style, n, starts, 1, steps + 2, steps,
                                        gen.sampler.guidance, 3))
    grouped = np.concatenate([v for _, v in blocks])
    grouped[:, :52] = np.clip(grouped[:, :52], 0, 1)
    np.testing.assert_allclose(grouped, whole, rtol=0, atol=1e-4)
