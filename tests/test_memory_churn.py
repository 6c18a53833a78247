"""What keeps a long-running caucased's memory close to a fresh one's under revocation churn:
CRLs built by one thread whichever request asks, and few malloc arenas.

Both are observed in a fresh interpreter (a subprocess running the real CA code), so that
the builder thread and the arenas are born there under observation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_BUILDER_THREADS = textwrap.dedent(
    """
    import json, sys, threading, datetime
    from caucase.ca import CertificateAuthority
    from caucase.crypto import crl_profile
    from caucase.storage import Storage
    from tests.support.ca_helpers import name

    seen = set()
    def observe(frame, event, arg):
        if event == "call" and frame.f_code in (
            crl_profile.make_crl.__code__, crl_profile.revoked_entry.__code__
        ):
            seen.add(threading.current_thread().name)
    threading.setprofile(observe)
    sys.setprofile(observe)

    ca = CertificateAuthority(Storage(sys.argv[1], "cas"), name("CAS"), 2048, 10)
    ca.prepare_crl_entries()

    def revoke_and_fetch(serial):
        ca.revoke_serial(serial)
        ca.get_crl_bundle()

    for serial in range(1, 6):
        thread = threading.Thread(target=revoke_and_fetch, args=(serial,))
        thread.start()
        thread.join()
    print(json.dumps(sorted(seen)))
    """
)


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    return result.stdout


def test_crls_are_built_by_one_thread_whichever_request_asks(tmp_path: Path) -> None:
    threads = json.loads(_run(_BUILDER_THREADS, str(tmp_path / "caucase.sqlite")))
    assert len(threads) == 1 and threads[0].startswith("crl builder"), threads


_LIMIT = "from caucase.http.workers import limit_malloc_arenas; print(limit_malloc_arenas())"


def test_malloc_arenas_are_limited_unless_the_operator_chose() -> None:
    environ = {key: value for key, value in os.environ.items() if key != "MALLOC_ARENA_MAX"}
    assert _run(_LIMIT, env=environ).strip() == "True"
    assert _run(_LIMIT, env={**environ, "MALLOC_ARENA_MAX": "4"}).strip() == "False"
