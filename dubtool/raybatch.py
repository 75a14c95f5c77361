"""A manifest batch on a Ray cluster (`localize --manifest lines.csv --ray [ADDRESS]`).

The rows, resume, results and failure semantics are the local batch's (`batch.run_manifest` calls
`run_rows` here for the rows left to do); only where a row runs changes:

* One Ray actor per worker: each loads the flow model once and runs rows one at a time; a free
  actor takes the next row (one row in flight per actor, so a slow line holds up nobody).
  CPU actors take 1 CPU each (torch on one thread, like a local worker); when the cluster has GPUs,
  actors take 1 GPU each and run on `cuda` (unless --device says otherwise).
* Workers write each row's outputs themselves, atomically, at the manifest's paths: inputs and
  outputs must be on storage that every node mounts at the same path (NFS, a PVC, ...).
* A row that fails is reported in its result; an actor that dies (out of memory, node lost) fails
  its row and is replaced. Ctrl-C / SIGTERM kill the actors, remove the temp files of the lines in
  flight, and keep the finished lines (a rerun skips them).

Ray is an optional extra (`pip install 'dubtool[ray]'`); this module is imported only for --ray.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from .batchrow import ManifestRow, RowResult, run_row
from .errors import DependencyError, InputError
from .localize import LocalizeOptions, default_report_path

LOCAL = "local"          # `--ray` without an address: join the Ray on this machine, or start one
CONNECT_TIMEOUT_S = float(os.environ.get("DUBTOOL_RAY_TIMEOUT", "10"))


def import_ray():
    try:
        import ray
    except ImportError:
        raise DependencyError("--ray needs Ray: pip install 'dubtool[ray]'") from None
    return ray


def _probe(host: str, port: int, address: str) -> None:
    """Fail in seconds, with the address in the message, where ray.init would wait for a minute."""
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        why = f"no answer in {CONNECT_TIMEOUT_S:g} s" if isinstance(e, socket.timeout) else (e.strerror or str(e)).lower()
        raise InputError(f"cannot reach the Ray cluster at {address} ({why}); is it running (`ray status`)? "
                         f"is the port open?") from None


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    host, _, port = address.rpartition(":") if ":" in address else (address, "", str(default_port))
    try:
        return host.strip("[]") or "127.0.0.1", int(port)
    except ValueError:
        raise InputError(f"--ray: bad address {address!r}; give host:port, ray://host:port or auto") from None


def _running_local_address() -> str | None:
    """The address of the Ray that `ray start` (or RAY_ADDRESS) made known on this machine, if any."""
    from ray._private.services import canonicalize_bootstrap_address_or_die

    try:
        return canonicalize_bootstrap_address_or_die("auto")
    except ConnectionError:
        return None


def connect(address: str, num_cpus: int) -> None:
    """ray.init for `--ray ADDRESS`. `local` joins the Ray running on this machine or starts one
    with `num_cpus` (stopped again by ray.shutdown); `auto` must find one running. An address nothing
    listens on fails at once, one that does not answer within CONNECT_TIMEOUT_S (ray.init alone
    retries for a minute); something listening that is no Ray head fails when ray.init gives up (~20 s)."""
    import signal
    import threading

    ray = import_ray()
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
    start_local = False
    if address in (LOCAL, "auto"):
        target = _running_local_address()
        if target is None and address == "auto":
            raise InputError("--ray auto: no running Ray cluster found on this machine (start one with "
                             "`ray start --head`, or give its address)")
        if target is None:
            start_local = True
        else:
            _probe(*_host_port(target, 6379), target)
            address = target
    elif address.startswith("ray://"):
        _probe(*_host_port(address[len("ray://"):], 10001), address)
    else:
        _probe(*_host_port(address, 6379), address)
    if not start_local:
        _token_auth_like_ray_start()
    on_term = signal.getsignal(signal.SIGTERM)  # ray.init replaces it with sys.exit; the CLI's own stays
    try:
        with _quiet_stderr() if not start_local else contextlib.nullcontext():
            _init(ray, address if not start_local else None, num_cpus, quiet)
    except ConnectionError as e:
        raise InputError(f"cannot connect to the Ray cluster at {address}: {_first_line(e)}") from None
    finally:
        if on_term is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_term)


def _token_auth_like_ray_start() -> None:
    """`ray start` turns token auth on when RAY_AUTH_MODE is unset and a token exists (~/.ray/auth_token,
    RAY_AUTH_TOKEN[_PATH]); a driver must do the same to be let in (ray.init alone does not)."""
    try:
        from ray._private.authentication.authentication_token_setup import \
            maybe_enable_token_auth_if_token_available
    except ImportError:
        return
    logging.disable(logging.WARNING)  # its "token authentication is enabled" notice
    try:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        logging.disable(logging.NOTSET)


def _init(ray, address: str | None, num_cpus: int, quiet: dict) -> None:
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
    else:
        ray.init(address=address, **quiet)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Ray's C++ client logs every connection retry on file descriptor 2, past Python's logging; the
    user gets one line from us instead (what went wrong is in the exception)."""
    import tempfile

    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class LocalizeWorker:
    """A Ray actor: the flow model loaded once, then rows one after another."""

    def __init__(self, base: LocalizeOptions, shared_folder: str) -> None:
        if base.device == "cpu":
            from .generate import set_num_threads

            set_num_threads(1)
        self.base = base
        self.sees_shared = os.path.isdir(shared_folder)
        self.shared_folder = shared_folder
        if base.model == "flow" and self.sees_shared:
            from .errors import DubtoolError
            from .localize import get_generator

            try:
                get_generator(base.model_path, base.device)
            except DubtoolError:
                pass  # each row then reports the model error itself

    def run(self, row: ManifestRow) -> RowResult:
        if not self.sees_shared:
            return RowResult(row.line, row.output, "failed", 0.0,
                             f"node {socket.gethostname()} does not see {self.shared_folder}: put the manifest, "
                             f"inputs and outputs on storage every Ray node mounts at the same path")
        return run_row(row, self.base)


def _plan(ray, workers: int | None, device: str | None, n_rows: int) -> tuple[int, dict, str]:
    """How many actors, the resources of each, and their torch device."""
    total = ray.cluster_resources()
    gpus = int(total.get("GPU", 0))
    use_gpu = device.startswith("cuda") if device else gpus > 0
    if use_gpu and gpus == 0:
        raise InputError(f"--device {device}: the Ray cluster has no GPU; leave --device out or use cpu")
    slots = gpus if use_gpu else int(total.get("CPU", 0))
    if slots < 1:
        raise InputError("the Ray cluster has no free CPU to run a worker on")
    if workers is not None and workers > slots:
        raise InputError(f"--workers {workers}: the Ray cluster has {slots} {'GPU' if use_gpu else 'CPU'}(s); "
                         f"give at most {slots} (or leave --workers out for one per {'GPU' if use_gpu else 'CPU'})")
    n = min(workers or slots, n_rows)
    resources = {"num_cpus": 1, "num_gpus": 1} if use_gpu else {"num_cpus": 1}
    # Ray gives each GPU actor its GPU as the only visible one: plain `cuda` is that GPU.
    return n, resources, "cuda" if use_gpu else "cpu"


def run_rows(rows: list[ManifestRow], base: LocalizeOptions, address: str, workers: int | None,
             device: str | None, shared_folder: str | os.PathLike) -> Iterator[RowResult]:
    """Run `rows` on the Ray cluster at `address`; yields each row's result as it finishes."""
    ray = import_ray()
    connect(address, num_cpus=workers or os.cpu_count() or 1)
    actors: list = []
    inflight: dict = {}  # ObjectRef -> (actor, row)
    try:
        n, resources, dev = _plan(ray, workers, device, len(rows))
        base = replace(base, device=dev)
        actor_cls = ray.remote(**resources)(LocalizeWorker)
        queue = list(reversed(rows))

        def new_actor():
            a = actor_cls.remote(base, str(shared_folder))
            actors.append(a)
            return a

        for _ in range(n):
            a = new_actor()
            if queue:
                row = queue.pop()
                inflight[a.run.remote(row)] = (a, row)
        replacements = n  # actors that die are replaced, but not forever
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            ref = ready[0]
            actor, row = inflight.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                result = RowResult(row.line, row.output, "failed", 0.0, _actor_death(e))
                actors.remove(actor)
                actor = None
                if replacements > 0 and queue:
                    replacements -= 1
                    actor = new_actor()
            except ray.exceptions.RayError as e:
                result = RowResult(row.line, row.output, "failed", 0.0, f"ray: {_first_line(e)}")
            if actor is not None and queue:
                nxt = queue.pop()
                inflight[actor.run.remote(nxt)] = (actor, nxt)
            elif actor is None and not inflight and queue:
                for r in reversed(queue):  # no worker left: fail the rest rather than wait forever
                    yield RowResult(r.line, r.output, "failed", 0.0, "no Ray worker left (they died)")
                queue.clear()
            yield result
    except BaseException:
        # Ctrl-C, SIGTERM or an error here: stop the workers now and remove what the lines in flight
        # had half written; the finished lines stay (a rerun skips them).
        for a in actors:
            try:
                ray.kill(a)
            except Exception:
                pass
        if inflight:
            try:
                ray.wait(list(inflight), num_returns=len(inflight), timeout=10)
            except Exception:
                pass
            for _, row in inflight.values():
                _remove_temps(row.output)
        raise
    finally:
        if ray.is_initialized():
            ray.shutdown()  # disconnects; a Ray that connect() started is stopped


def _actor_death(e: BaseException) -> str:
    """What a row's result says when its actor died: the exception inside, when Ray's message has one
    (a node without dubtool fails to import it), else Ray's first line."""
    import re

    found = [ln.strip() for ln in str(e).splitlines() if re.match(r"\s*\w+(Error|Exception): ", ln)]
    cause = re.sub(r"\x1b\[[0-9;]*m", "", found[-1] if found else _first_line(e))
    if "No module named" in cause or "failed to import" in cause:
        return (f"worker could not start: {cause} (install this dubtool, with the ray extra, on every Ray "
                f"node: docs/ray.md)")
    return f"worker died: {cause}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _remove_temps(output: str) -> None:
    """The temp files fileio.atomic_path makes for a row's CSV and report (`.<name>.<random><suffix>`
    beside each); the batch lock guarantees no other batch writes these names now."""
    for dest in (Path(output), default_report_path(output)):
        for tmp in dest.parent.glob(f".{dest.name}.*{dest.suffix}"):
            try:
                tmp.unlink()
            except OSError:
                pass
