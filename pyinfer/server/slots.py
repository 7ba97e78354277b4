"""Slots and the scheduler: N slots, each a Session (its own KV cache) over the shared weights. A request takes an
idle slot (the one whose cache shares the longest prefix with its prompt, so a re-sent conversation only evaluates
what is new) or waits in a FIFO queue; its generation runs in a worker thread (the C++ forward pass releases the
GIL) and reports events back to the event loop. A slot belongs to one request, and so to one thread, at a time:
the worker thread itself hands the slot back when it has finished, so a request that is abandoned (client gone)
never frees a slot that a thread is still using. Not here: HTTP, JSON, batching several slots in one forward pass.
"""
import asyncio
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor


def common_prefix(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Slot:
    def __init__(self, id, session):
        self.id = id
        self.session = session
        self.busy = False
        self.n_requests = 0
        self.last_used = 0.0
        self.in_use = threading.Lock()  # held by the worker thread running in this slot

    def info(self):
        """For /slots (event-loop thread): a busy slot's session belongs to its worker thread, so its cache size is
        only read when the slot is idle."""
        return {"id": self.id, "state": "processing" if self.busy else "idle", "n_ctx": self.session.n_ctx,
                "n_past": None if self.busy else self.session.n_past, "n_requests": self.n_requests}


class Job:
    """One request's run in a slot: `cancel` stops it between tokens; events arrive on `events` (an asyncio.Queue)
    as (kind, payload) tuples, ending with ("done", None) or ("error", exception)."""

    def __init__(self, loop):
        self.loop = loop
        self.cancel = threading.Event()
        self.events = asyncio.Queue()

    def emit(self, kind, payload=None):
        """From the worker thread: post an event to the event loop (a loop that has closed cancels the job)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
        except RuntimeError:  # the event loop is gone (shutdown)
            self.cancel.set()


class SlotPool:
    """--parallel N slots over `model` (each model.session(n_ctx)), a FIFO of waiting requests, N worker threads.
    Total compute threads n_threads are shared between the busy slots (each slot's count is set before each token:
    results do not depend on it)."""

    def __init__(self, model, n_slots, n_ctx=None, n_threads=None):
        self.model = model
        self.n_threads = int(n_threads or model.n_threads)
        self.slots = [Slot(i, model.session(n_ctx=n_ctx, n_threads=self.n_threads)) for i in range(n_slots)]
        self.n_ctx = self.slots[0].session.n_ctx
        self._waiters = []  # futures of requests waiting for a slot, oldest first
        self._jobs = set()
        self._executor = ThreadPoolExecutor(max_workers=n_slots, thread_name_prefix="pyinfer-slot")
        self._ids = itertools.count()

    # --- state (event-loop thread only) --------------------------------------------------------------------
    @property
    def n_busy(self):
        return sum(s.busy for s in self.slots)

    @property
    def n_waiting(self):
        return sum(not f.done() for f in self._waiters)

    def _take(self, slot):
        slot.busy = True
        slot.n_requests += 1
        slot.last_used = time.monotonic()
        return slot

    async def acquire(self, prompt_ids):
        """An idle slot, best prefix match first (then least recently used); waits in FIFO order when none is."""
        idle = [s for s in self.slots if not s.busy]
        if idle and not self.n_waiting:
            best = max(idle, key=lambda s: (common_prefix(s.session.tokens, prompt_ids), -s.last_used))
            return self._take(best)
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed a slot just as the request was abandoned
                self.release(fut.result())
            raise
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    def release(self, slot):
        """Give the slot to the oldest waiting request, or mark it idle."""
        slot.busy = False
        while self._waiters:
            fut = self._waiters.pop(0)
            if not fut.done():
                fut.set_result(self._take(slot))
                return

    # --- running --------------------------------------------------------------------------------------------
    def start(self, slot, work):
        """Run work(slot, job) in a worker thread; returns the Job. The thread releases the slot when work ends,
        whatever happens to the request meanwhile."""
        loop = asyncio.get_running_loop()
        job = Job(loop)
        self._jobs.add(job)

        def run():
            if not slot.in_use.acquire(blocking=False):  # a scheduler bug, never a data race on the session
                job.emit("error", RuntimeError(f"slot {slot.id} is already in use by another thread"))
                loop.call_soon_threadsafe(self._jobs.discard, job)
                return
            try:
                work(slot, job)
                job.emit("done")
            except BaseException as e:  # reported to the request; the server goes on
                job.emit("error", e)
            finally:
                slot.in_use.release()
                try:
                    loop.call_soon_threadsafe(self._finished, slot, job)
                except RuntimeError:  # loop closed: nobody will use the slot again
                    pass

        self._executor.submit(run)
        return job

    def _finished(self, slot, job):
        self._jobs.discard(job)
        self.release(slot)

    def threads_for(self, slot):
        """Compute threads a busy slot should use now: the total split over the busy slots (at least 1)."""
        return max(1, self.n_threads // max(1, self.n_busy))

    def cancel_all(self):
        """Stop every running job between two tokens (its request ends as if the output were complete)."""
        for job in list(self._jobs):
            job.cancel.set()

    def shutdown(self):
        """Stop every running job and the worker threads."""
        self.cancel_all()
        for fut in self._waiters:
            fut.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)
