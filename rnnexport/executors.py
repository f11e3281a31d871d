"""Where a fleet's per-model tasks run: local worker processes, N at a time, or Ray tasks.

Each model gets a process of its own, started fresh: TensorFlow's memory goes back to the system
when it exits, and a model that crashes its process (a segfault, the out-of-memory killer) fails
alone. Both yield (task, outcome) as models finish, in whatever order they finish.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rnnexport.errors import UserError, one_line

Crashed = Callable[[Any, str], Any]
# What the local workers' server imports before it forks them: what every worker imports first.
PRELOAD = ["rnnexport.fleet", "rnnexport.runs", "tensorflow", "keras"]


def _worker(task: Any, send: Any) -> None:
    # Ctrl-C reaches the whole process group; the driver decides, and terminates its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from rnnexport.fleet import run_task

    send.send(run_task(task))
    send.close()


def _died(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = ", as the kernel's out-of-memory killer does" if -exitcode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {exitcode} before it reported"


class _Workers:
    """The live worker processes, so that an interrupted run can end them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: set[Any] = set()
        self.stopping = False

    def run(self, task: Any, crashed: Crashed) -> Any:
        import multiprocessing

        # Forked from a server process that imported TensorFlow and Keras once, and ran nothing:
        # a worker starts in 0.1 s instead of 15 (TensorFlow's import), and its memory still goes
        # back when it exits. Never forked from the driver, whose TensorFlow may hold threads.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_worker, args=(task, send), name=f"rnnexport {task.label}", daemon=True)
        with self.lock:
            if self.stopping:
                return crashed(task, "not started: the run was interrupted")
            process.start()
            self.live.add(process)
        send.close()
        try:
            outcome = receive.recv()
        except EOFError:
            outcome = None
        finally:
            receive.close()
            process.join()
            with self.lock:
                self.live.discard(process)
        return outcome if outcome is not None else crashed(task, _died(process.exitcode))

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            for process in self.live:
                process.terminate()


def in_processes(tasks: Sequence[Any], jobs: int, crashed: Crashed) -> Iterator[tuple[Any, Any]]:
    """Each task in a fresh process, `jobs` at a time."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    workers = _Workers()
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="rnnexport-worker")
    try:
        futures = {pool.submit(workers.run, task, crashed): task for task in tasks}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        workers.stop()
        pool.shutdown(wait=True, cancel_futures=True)


def on_ray(tasks: Sequence[Any], address: str | None, retries: int, crashed: Crashed) -> Iterator[tuple[Any, Any]]:
    """Each task as a Ray task in a fresh Ray worker process (`max_calls=1`), as many at a time as
    the cluster has CPUs for; Ray schedules them and retries a task whose worker died."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'rnnexport[ray]'") from None
    import logging

    from rnnexport.fleet import run_task

    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"--ray-address {address or '(local)'}: cannot connect to Ray: {one_line(exc)}") from None
    remote = ray.remote(max_calls=1)(run_task)
    refs = {remote.options(num_cpus=task.threads, max_retries=retries,
                           name=f"rnnexport {task.label}").remote(task): task for task in tasks}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    outcome = crashed(refs[ref], f"Ray: {one_line(exc)}")
                yield refs[ref], outcome
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
