"""S3 as AWS answers it, on top of moto, plus the tools to break it on purpose.

- :func:`behave_like_aws`: what moto does differently from AWS for our roles: a missing key is
  403 AccessDenied (not 404) without ``s3:ListBucket``, and keys have a 1,024-byte limit.
- :class:`Turnstile`: runs several actors (invocations, uploads) so that their S3 calls happen in
  exactly the order a schedule says: interleavings are chosen, not left to the thread scheduler.
- :class:`Faults`: seeded S3 failures (500s, throttling, lost responses) and crashes (the
  invocation dies at an S3 call; nothing it would do afterwards reaches S3).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError

MAX_KEY_BYTES = 1024


def _aws_error(status: int, code: str, message: str) -> tuple[AWSResponse, dict[str, Any]]:
    http = AWSResponse("https://s3.amazonaws.com", status, {}, None)  # type: ignore[arg-type]
    return http, {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}


def behave_like_aws(client: Any) -> Any:
    """Make a boto3 S3 client see what AWS would show a role without s3:ListBucket."""

    def key_limit(params: dict[str, Any], **_: Any) -> Any:
        key = params.get("Key", "")
        if len(key.encode()) > MAX_KEY_BYTES:
            return _aws_error(400, "KeyTooLongError", "Your key is too long")
        return None

    def forbidden_when_missing(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        error = parsed.get("Error", {})
        if error.get("Code") in ("NoSuchKey", "404", "NotFound"):
            # GET carries an XML error body (AccessDenied); HEAD has no body, so botocore sees only "403"
            code, message = ("403", "Forbidden") if model.name == "HeadObject" else ("AccessDenied", "Access Denied")
            error.update({"Code": code, "Message": message})
            parsed["ResponseMetadata"]["HTTPStatusCode"] = 403

    for operation in ("PutObject", "GetObject", "HeadObject", "DeleteObject"):
        client.meta.events.register(f"before-call.s3.{operation}", key_limit)
    for operation in ("GetObject", "HeadObject"):
        client.meta.events.register(f"after-call.s3.{operation}", forbidden_when_missing)
    return client


class Crash(BaseException):
    """The invocation was killed here (BaseException: no ``except Exception`` in the service catches it)."""


@dataclass
class Faults:
    """Seeded trouble on one client: each S3 call may fail before it is sent (a 500, throttling),
    lose its response after S3 applied it, or crash the invocation. After a crash, every call
    from the same invocation crashes too: a dead process sends nothing."""

    rng: random.Random
    fail: float = 0.0
    lose_response: float = 0.0
    crash: float = 0.0
    dead: bool = False
    calls: int = 0

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-call.s3", self._before)
        client.meta.events.register("after-call.s3", self._after)
        return client

    def _before(self, model: Any, **_: Any) -> Any:
        self.calls += 1
        if self.dead:
            raise Crash("already dead")
        if self.rng.random() < self.crash:
            self.dead = True
            raise Crash(f"killed before {model.name}")
        if self.rng.random() < self.fail:
            code, status = self.rng.choice([("InternalError", 500), ("SlowDown", 503), ("ServiceUnavailable", 503)])
            return _aws_error(status, code, "injected")
        return None

    def _after(self, model: Any, http_response: Any, **_: Any) -> None:
        if self.dead or http_response.status_code >= 300 or model.name not in ("PutObject", "DeleteObject"):
            return
        if self.rng.random() < self.crash:
            self.dead = True
            raise Crash(f"killed after {model.name} was applied")
        if self.rng.random() < self.lose_response:
            raise ConnectionClosedError(endpoint_url="injected: the response was lost after S3 applied it")


@dataclass
class Actor:
    name: str
    run: Callable[[], Any]
    after: str | None = None  # starts only once this actor has finished (an event exists only after its upload)
    result: Any = None
    error: BaseException | None = None
    state: str = "pending"  # pending -> running <-> waiting -> done


@dataclass
class Turnstile:
    """Lets exactly one actor's S3 call proceed at a time, in the order of ``schedule``.

    Each actor's S3 client calls :meth:`gate` (wire it with :meth:`attach`) before every request. The
    driver waits until no actor is computing, then releases the waiting actor the schedule names
    next (or, once the schedule is spent or names an actor that cannot move, the first waiting one
    in a fixed order). Same schedule, same interleaving, every run.
    """

    actors: Sequence[Actor]
    schedule: Sequence[str]
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _turn: str | None = None
    trace: list[str] = field(default_factory=list)

    def attach(self, client: Any, actor: str) -> Any:
        client.meta.events.register("before-call.s3", lambda model, **_: self.gate(actor, model.name))
        return client

    def gate(self, actor: str, operation: str) -> None:
        with self._lock:
            self._by_name[actor].state = "waiting"
            self._lock.notify_all()
            self._lock.wait_for(lambda: self._turn == actor)
            self._turn = None
            self._by_name[actor].state = "running"
            self.trace.append(f"{actor}:{operation}")

    def run(self, timeout: float = 60.0) -> None:
        self._by_name = {actor.name: actor for actor in self.actors}
        threads: dict[str, threading.Thread] = {}
        steps = iter(self.schedule)
        with self._lock:
            while True:
                for actor in self.actors:
                    ready = actor.after is None or self._by_name[actor.after].state == "done"
                    if actor.state == "pending" and ready:
                        actor.state = "running"
                        threads[actor.name] = threading.Thread(target=self._body, args=(actor,), daemon=True)
                        threads[actor.name].start()
                settled = self._lock.wait_for(
                    lambda: all(a.state in ("waiting", "done", "pending") for a in self.actors) and self._turn is None,
                    timeout,
                )
                assert settled, f"an actor is stuck; trace so far: {self.trace}"
                waiting = [a.name for a in self.actors if a.state == "waiting"]
                if not waiting:
                    if all(a.state == "done" for a in self.actors):
                        return
                    continue  # an actor just became startable
                wanted = next(steps, None)
                self._turn = wanted if wanted in waiting else waiting[0]
                self._lock.notify_all()

    def _body(self, actor: Actor) -> None:
        try:
            actor.result = actor.run()
        except BaseException as exc:  # noqa: BLE001 - reported to the test, which decides
            actor.error = exc
        with self._lock:
            actor.state = "done"
            self._lock.notify_all()
