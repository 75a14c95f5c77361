"""A real Ray cluster on this machine for tests and benchmarks: a head node and more worker nodes,
each a `ray start --block` in its own process group (1 CPU, a small object store), all in a
temp folder; stop() ends exactly those processes (by group id) and removes the folder, never
touching another Ray on the machine (`ray stop` would end every one)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAY_BIN = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env() -> dict:
    """The environment of the nodes and drivers: no usage stats, this checkout's dubtool importable."""
    # RAY_AUTH_MODE: Ray 2.5x turns token auth on for a cluster when ~/.ray/auth_token exists (which a
    # local `ray.init()` leaves behind); this throw-away cluster on 127.0.0.1 and its drivers agree on none.
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_DEDUP_LOGS="0", PYTHONUNBUFFERED="1",
               RAY_AUTH_MODE="disabled")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("RAY_ADDRESS", None)
    return env


class LocalCluster:
    def __init__(self, nodes: int = 2, timeout_s: float = 90) -> None:
        if not RAY_BIN.exists():
            raise FileNotFoundError(f"no `ray` command beside {sys.executable}")
        self.tmp = Path(tempfile.mkdtemp(prefix="dtray", dir="/tmp"))  # short: Ray's socket paths are limited
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        try:
            self._start(["--head", "--port", str(self.port), "--temp-dir", str(self.tmp), "--include-dashboard",
                         "false", "--ray-client-server-port", str(free_port())], "head")
            self._wait_for_port(timeout_s)
            for i in range(1, nodes):
                self._start(["--address", self.address], f"worker{i}")
            self.wait_for_nodes(nodes, timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, args: list[str], name: str) -> None:
        cmd = [str(RAY_BIN), "start", "--block", "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats",
               "--node-ip-address", "127.0.0.1", "--object-store-memory", str(100 * 1024 * 1024),
               "--include-log-monitor", "false", "--dashboard-agent-listen-port", str(free_port()),
               "--metrics-export-port", str(free_port()), *args]
        log = (self.tmp / f"{name}.log").open("w")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ray_env(),
                                           start_new_session=True))

    def logs(self) -> str:
        return "".join(f"--- {f.name}\n{f.read_text()[-1500:]}" for f in sorted(self.tmp.glob("*.log")))

    def _wait_for_port(self, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.procs[0].poll() is not None:
                raise RuntimeError(f"ray start --head exited: {self.logs()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"the Ray head did not come up in {timeout_s} s: {self.logs()}")

    def wait_for_nodes(self, n: int, timeout_s: float = 90) -> None:
        code = ("import ray, sys, time\n"
                f"ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)\n"
                "alive = lambda: sum(x['Alive'] for x in ray.nodes())\n"
                f"deadline = time.time() + {timeout_s}\n"
                f"while alive() < {n} and time.time() < deadline: time.sleep(0.3)\n"
                f"sys.exit(0 if alive() >= {n} else 1)\n")
        r = subprocess.run([sys.executable, "-c", code], env=ray_env(), capture_output=True, text=True,
                           timeout=timeout_s + 30)
        if r.returncode != 0:
            raise TimeoutError(f"the Ray cluster did not reach {n} nodes: {r.stderr[-1500:]} {self.logs()}")

    def processes(self, title: str) -> list[int]:
        """Pids of this cluster's processes whose command line holds `title` (an actor's process is
        titled ray::ClassName): the nodes' process groups and their descendants (raylet starts its
        workers in process groups of their own)."""
        procs = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    stat = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
                    procs[int(d)] = (int(stat[1]), int(stat[2]), Path(f"/proc/{d}/cmdline").read_text(errors="replace"))
                except (OSError, IndexError, ValueError):
                    continue
        groups = {p.pid for p in self.procs}
        ours = {pid for pid, (_, pgid, _) in procs.items() if pgid in groups}
        while True:
            more = {pid for pid, (ppid, _, _) in procs.items() if ppid in ours} - ours
            if not more:
                break
            ours |= more
        return sorted(pid for pid in ours if title in procs[pid][2])

    def stop(self) -> None:
        workers = self.processes("") if self.procs else []  # raylet's workers, in groups of their own
        for p in reversed(self.procs):
            _stop_group(p)
        for pid in workers:  # they exit when their raylet does; any still here is killed by its id
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs = []
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _stop_group(p: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the node's process group (gcs_server may ignore SIGTERM)."""
    for sig, wait_s in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.time() + wait_s
        while time.time() < deadline:
            p.poll()  # reap the leader: a zombie would keep the group alive
            try:
                os.killpg(p.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            continue
        break
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass
