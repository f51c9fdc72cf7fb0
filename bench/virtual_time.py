"""Real threads run one at a time on a virtual clock: the product's own code, timed as Lambda would run it.

Every simulated thread (a Lambda instance's invocation loop, the product's thread-pool workers) is a real
thread, but only one runs at a time. A thread runs until it blocks on something the simulation models —
a sleep, a call to AWS or LaunchDarkly (their stand-ins call `block`), waiting for a future — then the
thread whose wake-up time is earliest runs next. The CPU a thread used in between is measured
(`time.thread_time`), scaled to the Lambda instance's share of a vCPU (`Cpu.scale`), and moves that
thread's clock on; threads of one instance share its CPU (Python's GIL serializes them there too).
Work of the stand-ins themselves is not counted (`uncounted`).

The product reads the clock and sleeps through what it is given (`clock=`, `sleep=`), and runs its pools
through `VirtualExecutor`, so nothing in it knows it is simulated.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

LAMBDA_VCPU_MB = 1769  # Lambda gives one vCPU at 1,769 MB, proportionally less below


@dataclass
class Cpu:
    """One Lambda execution environment's CPU: `scale` virtual seconds per second of this machine's CPU."""

    memory_mb: int
    free_at: float = 0.0
    used: float = 0.0  # real CPU seconds of our code on it

    @property
    def scale(self) -> float:
        # One thread of Python uses at most one vCPU, whatever the memory above 1,769 MB.
        return max(LAMBDA_VCPU_MB / self.memory_mb, 1.0)


class _Task:
    def __init__(self, name: str, cpu: Cpu, wake: float) -> None:
        self.name, self.cpu, self.wake = name, cpu, wake
        self.resume = threading.Event()
        self.thread: threading.Thread | None = None
        self.base = wake  # virtual time when it last resumed
        self.mark = 0.0  # its thread CPU time then
        self.excluded = 0.0  # CPU since then that is not ours (stand-ins)
        self.done = False
        self.end = 0.0

    def cpu_since_resume(self) -> float:
        return time.thread_time() - self.mark - self.excluded


class VirtualTime:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self._heap: list[tuple[float, int, _Task]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._by_thread: dict[int, _Task] = {}
        self._finished = threading.Event()
        self._failure: BaseException | None = None
        self._live = 0

    # ------------------------------------------------------------------------------ inside tasks

    def time(self) -> float:
        task = self._by_thread.get(threading.get_ident())
        if task is None:
            return self.now
        return task.base + task.cpu_since_resume() * task.cpu.scale

    def sleep(self, seconds: float) -> None:
        self.block(max(seconds, 0.0))

    def block(self, seconds: float) -> None:
        """The calling task waits `seconds` of virtual time (I/O, a sleep), after its CPU so far."""
        task = self._current()
        self._push(task, self._settle_cpu(task) + seconds)
        self._switch(task)

    @contextlib.contextmanager
    def uncounted(self) -> Iterator[None]:
        """CPU spent inside is not the product's (a stand-in answering, the simulation's bookkeeping)."""
        task = self._by_thread.get(threading.get_ident())
        started = time.thread_time()
        try:
            yield
        finally:
            if task is not None:
                task.excluded += time.thread_time() - started

    def spawn(self, fn: Callable[[], Any], *, cpu: Cpu, name: str) -> _Task:
        """Start `fn` as a new task, runnable now (at the caller's time)."""
        task = _Task(name, cpu, self.time())
        thread = threading.Thread(target=self._run_task, args=(task, fn), name=f"sim-{name}", daemon=True)
        task.thread = thread
        with self._lock:
            self._live += 1
        thread.start()
        self._push(task, task.wake)
        return task

    def wait_for(self, done: Callable[[], bool], until: Callable[[], float], waiters: list[_Task]) -> None:
        """Block the calling task until `done()`; whoever makes it done wakes it (see `wake_all`)."""
        task = self._current()
        self._settle_cpu(task)
        while not done():
            waiters.append(task)
            self._switch(task)
        task.base = max(task.base, until())

    def wake_all(self, waiters: list[_Task], at: float) -> None:
        for waiter in waiters:
            self._push(waiter, at)
        waiters.clear()

    # ------------------------------------------------------------------------------ driving

    def run(self, main: Callable[[], Any], *, cpu: Cpu) -> None:
        """Run `main` as the first task and return when every task has ended."""
        self.spawn(main, cpu=cpu, name="main")
        self._dispatch_next()
        self._finished.wait()
        if self._failure is not None:
            raise self._failure

    # ------------------------------------------------------------------------------ machinery

    def _current(self) -> _Task:
        return self._by_thread[threading.get_ident()]

    def _settle_cpu(self, task: _Task) -> float:
        """Charge the CPU the task used since it resumed to its instance; its clock moves on by that."""
        used = task.cpu_since_resume()
        task.cpu.used += used
        start = max(task.base, task.cpu.free_at)
        task.base = task.cpu.free_at = start + used * task.cpu.scale
        task.mark, task.excluded = time.thread_time(), 0.0
        return task.base

    def _push(self, task: _Task, wake: float) -> None:
        with self._lock:
            heapq.heappush(self._heap, (wake, next(self._seq), task))

    def _switch(self, task: _Task) -> None:
        """Hand the CPU to the earliest task (maybe this one) and wait for our turn."""
        task.resume.clear()
        self._dispatch_next()
        task.resume.wait()
        task.mark, task.excluded = time.thread_time(), 0.0

    def _dispatch_next(self) -> None:
        with self._lock:
            if not self._heap:
                if self._live == 0:
                    self._finished.set()
                elif self._failure is None:
                    self._failure = RuntimeError("simulation deadlock: every task is waiting")
                    self._finished.set()
                return
            wake, _, task = heapq.heappop(self._heap)
            self.now = max(self.now, wake)
            task.base = wake
        task.resume.set()

    def _run_task(self, task: _Task, fn: Callable[[], Any]) -> None:
        self._by_thread[threading.get_ident()] = task
        task.resume.wait()
        task.mark = time.thread_time()
        try:
            fn()
        except BaseException as exc:  # the whole simulation fails with the first error
            with self._lock:
                self._failure = self._failure or exc
            self._finished.set()
            return
        finally:
            task.done = True
        task.end = self._settle_cpu(task)
        with self._lock:
            self._live -= 1
        del self._by_thread[threading.get_ident()]
        self._dispatch_next()


class VirtualExecutor(Executor):
    """A thread pool of at most `max_workers` tasks on one instance's CPU, in virtual time."""

    def __init__(self, clock: VirtualTime, cpu: Cpu, max_workers: int, name: str) -> None:
        self._clock, self._cpu, self._max, self._name = clock, cpu, max_workers, name
        self._queue: list[tuple[_Future[Any], Callable[[], Any]]] = []
        self._workers = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: _Future[T] = _Future(self._clock)
        self._queue.append((future, lambda: fn(*args, **kwargs)))
        if self._workers < self._max:
            self._workers += 1
            self._clock.spawn(self._work, cpu=self._cpu, name=self._name)
        return future

    def map(
        self, fn: Callable[..., T], *iterables: Iterable[Any], timeout: float | None = None, chunksize: int = 1
    ) -> Iterator[T]:
        futures = [self.submit(fn, *args) for args in zip(*iterables, strict=False)]
        return (f.result() for f in futures)

    def _work(self) -> None:
        while self._queue:
            future, call = self._queue.pop(0)
            try:
                value, error = call(), None
            except BaseException as exc:
                value, error = None, exc
            future.finish(value, error)
        self._workers -= 1


class _Future(Future[T]):
    def __init__(self, clock: VirtualTime) -> None:
        super().__init__()
        self._vt = clock
        self._blocked_tasks: list[_Task] = []
        self._finished_at = 0.0

    def finish(self, value: Any, exc: BaseException | None) -> None:
        self._finished_at = self._vt.time()
        if exc is None:
            self.set_result(value)
        else:
            self.set_exception(exc)
        self._vt.wake_all(self._blocked_tasks, self._finished_at)

    def result(self, timeout: float | None = None) -> T:
        if not self.done():
            self._vt.wait_for(self.done, lambda: self._finished_at, self._blocked_tasks)
        return super().result(0)
