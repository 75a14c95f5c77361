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
