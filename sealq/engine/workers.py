"""Inner steps on Ray (``--workers N``): N actors, each holding its own llama.cpp model and training model
(loaded once), run baselines and inner steps in parallel; the driver stays the only writer of runs.db.

What travels: a job (passage, seed, settings) to a worker; its result and the adapter's files, as bytes
through Ray's object store, back to the driver, which writes the files (temporary name, fsync, rename)
and then the transaction, exactly as in-process (:mod:`sealq.engine.record`). No shared filesystem is
needed. A ReST-EM policy adapter is trained on one worker and sent to every worker before the next round.

Faults: a worker process that dies mid-job (killed, out of memory) is replaced and the job runs again on
another worker (same seed, same result), recorded once; a :class:`~sealq.errors.SealqError` inside a
worker fails the run with that one line.

Security: a local cluster that sealq starts binds 127.0.0.1 only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
set before Ray is imported; without it Ray on Linux swaps loopback for the machine's interface address),
with no dashboard and no usage reporting. A remote cluster is joined only with an explicit
``ray_address``. Ray's ports accept code from anyone who can reach them: keep a cluster's network private.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sealq.cores import usable_cores
from sealq.engine.config import Directive, LoopConfig, ScaleConfig, TrainConfig
from sealq.engine.jobs import BaselineResult, Job, LocalExecutor, StepJob, run_job
from sealq.engine.step import Models, StepResult, Timer, TrainedAdapter, load_models
from sealq.errors import SealqError

if TYPE_CHECKING:
    from sealq.engine.passage import LoopEvents

__all__ = ["RayPool", "import_ray", "LOOPBACK_ENV"]

#: Set before Ray is imported so that a local cluster stays on 127.0.0.1 (Ray 2.60 on Linux otherwise
#: advertises the machine's interface address) and reports no usage statistics.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}

#: Object store of a local cluster: adapters are a few MB each; Ray's default is 30% of memory.
_LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2

#: Fault injection for the tests (``sealq.faults``), passed to worker 0 only, at its first start.
_WORKER_FAULTS = {"SEALQ_WORKER_KILL_AT": "SEALQ_KILL_AT", "SEALQ_WORKER_FAIL_AT": "SEALQ_FAIL_AT"}


def import_ray(local: bool = True) -> Any:
    """Import Ray with :data:`LOOPBACK_ENV` set first; to join a cluster (not ``local``), in token mode when
    a cluster token is at hand (Ray reads its settings when it is imported).

    Returns:
        the ``ray`` module.

    Raises:
        SealqError: Ray is not installed, or (``local``) it was imported before without the loopback
            setting, so a cluster it starts could listen on the machine's other addresses.
    """
    if local and "ray" in sys.modules and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
        raise SealqError("Ray was imported before sealq could keep its local cluster on 127.0.0.1: set "
                         "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray, or give --ray-address")
    os.environ.update(LOOPBACK_ENV)
    if not local:
        _use_token_if_any()
    try:
        import ray
    except ImportError:
        raise SealqError("--workers needs Ray: pip install 'sealq[ray]'") from None
    return ray


def _use_token_if_any() -> None:
    """Send the cluster token when one is at hand: Ray 2.60's ``ray start --head`` enables token
    authentication by default, but a driver joining by address sends its token only in token mode
    (``RAY_AUTH_MODE=token``), which a cluster without authentication accepts too. An explicit
    ``RAY_AUTH_MODE`` is left as it is."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


@dataclass(frozen=True)
class _Files:
    """An adapter's files as bytes: the PEFT folder (relative path -> bytes) and the GGUF."""

    name: str
    peft: dict[str, bytes]
    gguf: bytes


@dataclass(frozen=True)
class _Failure:
    """A SealqError raised in a worker, sent back as a value (its one line)."""

    message: str


def _read(peft_dir: Path, gguf_path: Path) -> _Files:
    """An adapter's PEFT folder and GGUF file as bytes."""
    peft = {str(f.relative_to(peft_dir)): f.read_bytes() for f in sorted(peft_dir.rglob("*")) if f.is_file()}
    return _Files(peft_dir.name, peft, gguf_path.read_bytes())


def _pack(adapter: TrainedAdapter) -> _Files:
    """A worker's adapter as bytes; its local files are deleted."""
    files = _read(adapter.peft_dir, adapter.gguf_path)
    shutil.rmtree(adapter.peft_dir, ignore_errors=True)
    adapter.gguf_path.unlink(missing_ok=True)
    return files


def _write_synced(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write(files: _Files, folder: Path) -> tuple[Path, Path]:
    """Write an adapter's files into ``folder`` as :func:`sealq.engine.step.train_and_convert` does
    (temporary names, fsync, rename: a process killed meanwhile leaves only ``.tmp-*`` files); returns
    the PEFT folder and the GGUF path."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp, peft_dir = folder / f".tmp-{files.name}", folder / files.name
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, data in files.peft.items():
        _write_synced(tmp / rel, data)
    shutil.rmtree(peft_dir, ignore_errors=True)
    os.replace(tmp, peft_dir)
    gguf = folder / f"{files.name}.gguf"
    _write_synced(folder / f".tmp-{files.name}.gguf", files.gguf)
    os.replace(folder / f".tmp-{files.name}.gguf", gguf)
    return peft_dir, gguf


def _unpack(adapter: TrainedAdapter, files: _Files, folder: Path) -> TrainedAdapter:
    """A worker's adapter written into the driver's ``folder``, with its paths there."""
    peft_dir, gguf = _write(files, folder)
    return replace(adapter, peft_dir=peft_dir, gguf_path=gguf, train=replace(adapter.train, adapter_dir=peft_dir))


class StepWorker:
    """A Ray actor's state: an in-process executor (:class:`sealq.engine.jobs.LocalExecutor`) on the models
    of one worker process (loaded once), and its scratch folder.

    Args:
        config: the run's settings (``LoopConfig.to_dict()``); threads are replaced by ``threads``.
        threads: torch, OpenMP and llama.cpp threads of this worker.
        model_sha256: the driver's model file hash; a node with another file refuses to start.
        faults: ``SEALQ_KILL_AT`` / ``SEALQ_FAIL_AT`` for this process (tests), else empty.
    """

    def __init__(self, config: dict[str, Any], threads: int, model_sha256: str, faults: dict[str, str]) -> None:
        for var in _WORKER_FAULTS.values():
            os.environ.pop(var, None)
        os.environ.update(faults)
        c = LoopConfig.from_dict(config)
        self.config = c.with_threads(threads)
        self.tmp = Path(tempfile.mkdtemp(prefix="sealq-worker-"))
        self.local: LocalExecutor | None = None
        self.error: str | None = None
        try:
            self.local = LocalExecutor(self._load(model_sha256), self.config)
        except SealqError as e:
            self.error = str(e)

    def _load(self, model_sha256: str) -> Models:
        from sealq.models.registry import file_sha256, resolve_model

        path = resolve_model(self.config.model).path
        if file_sha256(path) != model_sha256:
            raise SealqError(f"worker on {socket.gethostname()}: model file {path} differs from the driver's "
                             "(sha256); every node needs the same model file")
        return load_models(self.config)

    def ready(self) -> dict[str, Any]:
        """This worker's process id and host, and the one-line error if its models failed to load."""
        return {"pid": os.getpid(), "host": socket.gethostname(), "error": self.error}

    def run(self, job: Job) -> tuple[BaselineResult | StepResult | _Failure, _Files | None]:
        """Run a job (:func:`sealq.engine.jobs.run_job`); a step's adapter comes back as bytes."""
        assert self.local is not None  # a worker whose models did not load gets no work (RayPool._start raises)
        try:
            if isinstance(job, StepJob):
                result = run_job(StepJob(replace(job.inp, out_dir=self.tmp)), self.local.models, self.config)
                assert isinstance(result, StepResult)  # run_job's result of a StepJob
                return result, (_pack(result.adapter) if result.adapter else None)
            return run_job(job, self.local.models, self.config), None
        except SealqError as e:
            return _Failure(str(e)), None

    def train(self, sequences: Sequence[list[int]], directive: Directive, config: TrainConfig, name: str, seed: int,
              stages: tuple[str, str]) -> tuple[TrainedAdapter | _Failure, _Files | None, list[dict[str, Any]]]:
        """Train and convert an adapter (the ReST-EM policy); returns it, its files and the timings."""
        assert self.local is not None  # as in run()
        timer = Timer()
        try:
            adapter = self.local.train_adapter(sequences, directive, config, self.tmp, name, seed, timer, *stages)
        except SealqError as e:
            return _Failure(str(e)), None, []
        return adapter, _pack(adapter), timer.rows

    def add_policy(self, files: _Files) -> None:
        """Merge a policy adapter into the training model and attach it in llama.cpp on top of the others."""
        peft_dir, gguf = _write(files, self.tmp / "policy")
        assert self.local is not None  # as in run()
        self.local.add_policy(str(peft_dir), str(gguf))


class RayPool:
    """Runs jobs on ``scale.workers`` Ray actors (:class:`StepWorker`); the executor protocol of
    :class:`sealq.engine.jobs.LocalExecutor` (``free``, ``submit``, ``next_done``, ``train_adapter``,
    ``add_policy``, ``close``). Jobs start in submission order on whichever worker is idle.

    Raises:
        SealqError: Ray is missing, the cluster has fewer CPUs than workers x threads, or a worker cannot
            load the model.
    """

    def __init__(self, config: LoopConfig, scale: ScaleConfig, model_sha256: str, events: LoopEvents,
                 models: Models) -> None:
        self.models = models  # the driver's: tokenization only (no training model)
        self._started = False
        self.ray = import_ray(local=scale.ray_address is None)
        self._started = self._connect(scale)
        try:
            cpus = int(self.ray.cluster_resources().get("CPU", 0))
            self.threads = scale.threads(usable_cores() if self._started else cpus)
            if scale.workers * self.threads > cpus:
                raise SealqError(f"--workers {scale.workers} x {self.threads} threads need "
                                 f"{scale.workers * self.threads} CPUs; the Ray cluster has {cpus}")
            self._args = (config.to_dict(), self.threads, model_sha256)
            self._actor_class = self.ray.remote(StepWorker)
            self._events, self.capacity, self._replaced = events, scale.workers, 0
            events.stage(f"starting {scale.workers} Ray workers, {self.threads} threads each "
                         f"({'local cluster on 127.0.0.1' if self._started else scale.ray_address})")
            self._policies: list[_Files] = []
            self._idle = self._start([self._faults(i) for i in range(scale.workers)])
            self._queue: deque[tuple[int, Job]] = deque()
            self._inflight: dict[Any, tuple[int, Job, Any]] = {}  # object ref -> (ticket, job, actor)
            self._tickets = 0
            self._retries: dict[int | tuple[str, str], int] = {}
        except BaseException:
            self.close()
            raise

    def _connect(self, scale: ScaleConfig) -> bool:
        """Join ``scale.ray_address``, or an already initialized Ray, or start a local cluster on 127.0.0.1;
        True when this pool started the cluster (and shuts it down on :meth:`close`)."""
        if self.ray.is_initialized():
            return False
        quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
        if scale.ray_address:
            try:
                self.ray.init(address=scale.ray_address, **quiet)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise SealqError(f"cannot join the Ray cluster at {scale.ray_address}: {e} (a cluster with token "
                                 "authentication needs its token in RAY_AUTH_TOKEN or ~/.ray/auth_token)") from None
            return False
        try:
            self.ray.init(num_cpus=usable_cores(), include_dashboard=False, _node_ip_address="127.0.0.1",
                          object_store_memory=_LOCAL_OBJECT_STORE_BYTES, **quiet)
        except (ConnectionError, RuntimeError, ValueError, OSError) as e:
            raise SealqError(f"cannot start a local Ray cluster: {e}") from None
        return True

    @staticmethod
    def _faults(i: int) -> dict[str, str]:
        return {inner: os.environ[outer] for outer, inner in _WORKER_FAULTS.items() if i == 0 and outer in os.environ}

    def _start(self, faults: list[dict[str, str]]) -> list[Any]:
        """Start one worker per entry of ``faults``, replay the policies added so far, wait until loaded."""
        cls = self._actor_class
        env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        workers = [cls.options(num_cpus=self.threads, runtime_env={"env_vars": env}).remote(*self._args, f)
                   for f in faults]
        states = self.ray.get([w.ready.remote() for w in workers])
        for state in states:
            if state["error"]:
                raise SealqError(state["error"])
        for files in self._policies:
            self.ray.get([w.add_policy.remote(files) for w in workers])
        return workers

    def free(self) -> int:
        return len(self._idle) - len(self._queue)

    def submit(self, job: Job) -> int:
        self._tickets += 1
        self._queue.append((self._tickets, job))
        return self._tickets

    def next_done(self) -> tuple[int, BaselineResult | StepResult]:
        """The next finished job (whichever worker finishes first); a job whose worker died runs again."""
        while True:
            while self._queue and self._idle:
                ticket, job = self._queue.popleft()
                worker = self._idle.pop(0)
                self._inflight[worker.run.remote(job)] = (ticket, job, worker)
            [ref], _ = self.ray.wait(list(self._inflight), num_returns=1)
            ticket, job, worker = self._inflight.pop(ref)
            try:
                out, files = self.ray.get(ref)
            except self.ray.exceptions.RayActorError:
                self._replace(worker, ticket)
                self._queue.appendleft((ticket, job))
                continue
            self._idle.append(worker)
            if isinstance(out, _Failure):
                raise SealqError(out.message)
            if files is not None:
                assert isinstance(job, StepJob)  # only a step's result comes with files
                out = replace(out, adapter=_unpack(out.adapter, files, job.inp.out_dir))
            return ticket, out

    def _replace(self, worker: Any, job_key: int | tuple[str, str]) -> None:
        """A worker died mid-job: start another (the caller runs the job again; at most twice per job)."""
        self._retries[job_key] = self._retries.get(job_key, 0) + 1
        self._replaced += 1
        if self._retries[job_key] > 2 or self._replaced > 2 * self.capacity + 2:
            raise SealqError(f"Ray workers keep dying ({self._replaced} lost); see the Ray logs "
                             "(/tmp/ray/session_latest/logs on each node)")
        self._events.stage("a Ray worker died mid-job; starting a new one and running the job again")
        self.ray.kill(worker)
        self._idle += self._start([{}])

    def train_adapter(self, sequences: Sequence[list[int]], directive: Directive, config: TrainConfig, folder: Path,
                      name: str, seed: int, timer: Timer, train_stage: str, convert_stage: str) -> TrainedAdapter:
        """Train and convert an adapter on an idle worker; its files are written into ``folder/name``."""
        while True:
            worker = self._idle.pop(0)
            try:
                out, files, timings = self.ray.get(worker.train.remote(sequences, directive, config, name, seed,
                                                                       (train_stage, convert_stage)))
            except self.ray.exceptions.RayActorError:
                self._replace(worker, ("adapter", name))
                continue
            self._idle.append(worker)
            if isinstance(out, _Failure):
                raise SealqError(out.message)
            timer.rows.extend(timings)
            return _unpack(out, files, folder)

    def add_policy(self, peft_dir: str, gguf_path: str) -> None:
        """Send a policy adapter's files to every worker (and to any worker started later)."""
        files = _read(Path(peft_dir), Path(gguf_path))
        self._policies.append(files)
        self.ray.get([w.add_policy.remote(files) for w in self._idle])

    def close(self) -> None:
        """Stop the workers, and the local cluster if this pool started it."""
        for w in getattr(self, "_idle", []) + [w for _, _, w in getattr(self, "_inflight", {}).values()]:
            self.ray.kill(w)
        if self._started:
            self.ray.shutdown()
