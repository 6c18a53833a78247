"""Challenge validation in the background (RFC 8555 7.5.1): a few worker threads and a
bounded queue, so that a client's POST to a challenge returns at once ("processing") and
the client polls its authorization, while no number of clients can make caucased open
more than a few validation connections at a time.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from caucase.acme.challenges import Validators
from caucase.acme.identifiers import Identifier
from caucase.acme.problems import AcmeProblem, ConnectionProblem

logger = logging.getLogger(__name__)

DEFAULT_WORKERS = 4
DEFAULT_QUEUE = 64


@dataclass(frozen=True)
class ValidationJob:
    challenge_id: int
    authz_id: int
    challenge_type: str
    identifier: Identifier
    token: str
    key_authorization: str


Outcome = Callable[[ValidationJob, "AcmeProblem | None"], None]
"""Records a job's result: None when the identifier's holder proved control."""


class ValidationPool:
    def __init__(
        self,
        validators: Validators,
        record: Outcome,
        workers: int = DEFAULT_WORKERS,
        queue_size: int = DEFAULT_QUEUE,
    ) -> None:
        self._validators = validators
        self._record = record
        self._jobs: queue.Queue[ValidationJob | None] = queue.Queue(queue_size)
        self._threads = [
            threading.Thread(target=self._work, name=f"acme-validation-{number}", daemon=True)
            for number in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: ValidationJob) -> bool:
        """Queue `job`; False when the queue is full (the caller asks the client to retry)."""
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            return False
        return True

    def close(self) -> None:
        """Stop the workers once the jobs under way end (queued ones are dropped: their
        challenges stay processing, and a client's next POST starts them again)."""
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self._run(job)

    def _run(self, job: ValidationJob) -> None:
        problem: AcmeProblem | None = None
        try:
            self._validators.validate(
                job.challenge_type, job.identifier, job.token, job.key_authorization
            )
        except AcmeProblem as refusal:
            problem = refusal
        except Exception as error:  # a validator bug must not kill the worker
            logger.exception("%s validation of %s failed", job.challenge_type, job.identifier)
            problem = ConnectionProblem(f"validation failed: {error}")
        try:
            self._record(job, problem)
        except Exception:  # storage down: the challenge stays processing, retried later
            logger.exception("cannot record the %s validation of %s", job.challenge_type,
                             job.identifier.value)  # fmt: skip
