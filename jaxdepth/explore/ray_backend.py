"""Scale-out on Ray: long-lived actors that each build an `Evaluator` (model, frames, compiled executables)
once and then evaluate many configurations; the driver stays the only writer of the results store.

    executor = RayExecutor(spec, address="auto")           # an existing cluster (ray start --head ...)
    run_configs(evaluator, store, configs, executor=executor)

Each actor evaluates one configuration at a time; the driver keeps every actor busy and yields records as
they finish. A worker that dies (node lost, process killed) is restarted by Ray (``max_restarts``) and its
configuration resubmitted, up to ``retries`` times; other errors are raised. Results equal a local run's:
the same code on the same inputs (the driver checks each record's context against its own).
"""
from __future__ import annotations

import importlib.util
import re
from typing import Any, Iterator, Optional, Sequence

from .evaluator import Config, EvalSpec

_HOST = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)"
_HOST_PORT = re.compile(rf"^{_HOST}:(\d{{1,5}})$")


def _without_scheme(address: str) -> tuple[str, bool]:
    """(``address`` without a leading ``ray://``, whether it had one)."""
    client = address.startswith("ray://")
    return (address[len("ray://"):] if client else address), client


def check_address(address: str) -> str:
    """``address`` when it has a form `connect` takes ('auto', 'local', 'HOST:PORT', 'ray://HOST[:PORT]') and
    the 'ray' package is installed, else ValueError; checked without importing Ray or contacting anything."""
    rest, client = _without_scheme(address)
    m = _HOST_PORT.match(rest)
    ok = address in ("auto", "local") or (m is not None and 0 < int(m.group(2)) < 65536) or \
        (client and re.fullmatch(_HOST, rest) is not None)
    if not ok:
        raise ValueError("not a Ray address: use 'auto' (the running cluster), 'local' (start one here), "
                         "HOST:PORT (e.g. 10.0.0.5:6379) or ray://HOST:PORT")
    if importlib.util.find_spec("ray") is None:
        raise ValueError("needs the 'ray' package: pip install 'jaxdepth[ray]'")
    return address


class _Worker:
    """A Ray actor body: one evaluator, many configurations."""

    def __init__(self, spec: EvalSpec):
        import os
        os.environ.setdefault("KERAS_BACKEND", "jax")
        self.evaluator = spec.build()

    def context(self) -> str:
        return self.evaluator.context

    def threads(self) -> int:
        """numba's thread count in this actor (its kernels' share of the node)."""
        import numba
        return numba.get_num_threads()

    def evaluate(self, config: Config) -> dict:
        return self.evaluator.evaluate(config)


def connect(address: Optional[str], num_cpus: Optional[int] = None) -> Any:
    """``ray.init`` for ``address``: ``"auto"`` (the running cluster), ``"local"`` (start one in this process
    with ``num_cpus``), or ``host:port`` / ``ray://...``. Reuses an initialised Ray."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs the 'ray' package: pip install 'jaxdepth[ray]'") from None
    if not ray.is_initialized():
        if address in (None, "local"):
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        else:
            check_reachable(address)
            ray.init(address=address, log_to_driver=False)
    return ray


#: Seconds to wait for a cluster's head to accept a connection (Ray itself retries for minutes).
REACH_TIMEOUT = 10.0


def check_reachable(address: str) -> None:
    """ConnectionError when a HOST:PORT (or ray://HOST:PORT) head does not accept a TCP connection within
    `REACH_TIMEOUT`: ``ray.init`` would keep retrying for minutes. 'auto' and addresses without a port are
    left to Ray."""
    import socket

    m = _HOST_PORT.match(_without_scheme(address)[0])
    if m is None:
        return
    host = m.group(1).strip("[]")
    try:
        socket.create_connection((host, int(m.group(2))), timeout=REACH_TIMEOUT).close()
    except OSError as e:
        raise ConnectionError(f"no Ray cluster answers at {address} ({e.strerror or e})") from None


class RayExecutor:
    """Evaluate configurations on ``workers`` Ray actors (default: one per CPU of the cluster), each actor's
    numba kernels on ``cpus_per_worker`` threads."""

    def __init__(self, spec: EvalSpec, address: Optional[str] = "auto", *, workers: Optional[int] = None,
                 cpus_per_worker: float = 1.0, retries: int = 2, num_cpus: Optional[int] = None,
                 expected_context: Optional[str] = None, startup_timeout: float = 1800.0):
        ray = connect(address, num_cpus)
        self.ray = ray
        self.retries = retries
        self.startup_timeout = startup_timeout
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker))
        # each actor's numba kernels use the CPUs Ray gives it, not every core of the node: with the default
        # of one actor per CPU, the actors' kernels would otherwise oversubscribe the cores
        threads = str(max(1, int(cpus_per_worker)))
        actor = ray.remote(num_cpus=cpus_per_worker, max_restarts=retries, max_task_retries=0,
                           runtime_env={"env_vars": {"NUMBA_NUM_THREADS": threads}})(_Worker)
        self.actors = [actor.remote(spec) for _ in range(n)]
        if expected_context is not None:
            contexts = set(ray.get([a.context.remote() for a in self.actors], timeout=startup_timeout))
            if contexts != {expected_context}:
                raise RuntimeError(f"Ray workers see a different model / data / protocol than the driver "
                                   f"({contexts} vs {expected_context}): same files on every node?")

    def run(self, configs: Sequence[Config]) -> Iterator[tuple[Config, dict]]:
        ray = self.ray
        from ray.exceptions import RayActorError
        queue = list(configs)
        failures: dict[int, int] = {}
        pending: dict[Any, tuple[Any, int]] = {}

        def submit(actor: Any) -> None:
            if queue:
                i = len(configs) - len(queue)
                pending[actor.evaluate.remote(queue.pop(0))] = (actor, i)

        for a in self.actors:
            submit(a)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            actor, i = pending.pop(ref)
            try:
                rec = ray.get(ref)
            except RayActorError:
                failures[i] = failures.get(i, 0) + 1
                if failures[i] > self.retries:
                    raise
                self._wait_restarted(actor)
                pending[actor.evaluate.remote(configs[i])] = (actor, i)
                continue
            yield configs[i], rec
            submit(actor)

    def _wait_restarted(self, actor: Any) -> None:
        """Block until Ray has restarted ``actor`` (it rebuilds its evaluator), so the resubmitted
        configuration is not refused as 'actor is restarting' and counted as another failure."""
        import time
        from ray.exceptions import ActorUnavailableError, GetTimeoutError
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                self.ray.get(actor.context.remote(), timeout=max(1.0, deadline - time.monotonic()))
                return
            except (ActorUnavailableError, GetTimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def shutdown(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
