"""Shared test helpers."""

import shutil
import subprocess

import pytest


@pytest.fixture
def assimp_info():
    """Run Debian's `assimp info` on a file and return its numeric statistics ({'Meshes': 1, ...});
    skips when assimp is not installed."""
    if not shutil.which("assimp"):
        pytest.skip("assimp not installed")

    def run(path) -> dict[str, int]:
        r = subprocess.run(["assimp", "info", str(path)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        stats = {}
        for line in r.stdout.splitlines():
            key, _, value = line.partition(":")
            if value.strip().isdigit():
                stats.setdefault(key.strip(), int(value))
        return stats

    return run


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A real flow checkpoint (untrained, tiny) exercising load_model/generate; it says nothing about
    lip quality, only about the pipeline around it."""
    from dubtool.generate import ModelDimensions, SamplerConfig, build_net, identity_stats, save_checkpoint

    dims = ModelDimensions(d_model=32, n_layers=1, n_heads=2, ff_mult=2)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, build_net(dims), dims, SamplerConfig(steps=2), identity_stats(dims), {"name": "tiny-untrained"})
    return str(path)
