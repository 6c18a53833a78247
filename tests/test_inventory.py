"""The inventory of issued certificates (caucase.storage.inventory) on both engines, and
``GET {ca}/inventory`` through the WSGI application: fields, approvals, filters, pages
(also while certificates are being issued), certificates the reference stored, the index
that answers "expiring within", and who may ask."""

from __future__ import annotations

import contextlib
import datetime
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from caucase import exceptions
from caucase.ca import CertificateAuthority
from caucase.crypto import x509util
from caucase.storage import Engine, Storage, open_database, restore_database
from caucase.storage.inventory import InventoryEntry, Query, page_sql
from tests.conftest import FakeClock
from tests.support.ca_helpers import CA_SUBJECT, CRT_LIFE, generate_keys, make_csr
from tests.support.wsgi_support import Deployment, call, deploy, foreign_certificate

DAY = 86400


@pytest.fixture(scope="module")
def keys() -> list[rsa.RSAPrivateKey]:
    return generate_keys(3)


@pytest.fixture
def ca(db_location: str, clock: FakeClock) -> Iterator[CertificateAuthority]:
    storage = Storage(db_location, "cas")
    yield CertificateAuthority(storage, CA_SUBJECT, 2048, CRT_LIFE, clock=clock)
    storage.close()


def listing(
    ca: CertificateAuthority, limit: int = 1000, **filters: object
) -> list[InventoryEntry]:
    """Every entry the filters select, page after page."""
    entries: list[InventoryEntry] = []
    cursor = None
    while True:
        page, cursor = ca.list_certificates(Query(cursor=cursor, limit=limit, **filters))  # type: ignore[arg-type]
        entries += page
        if cursor is None:
            return entries


def issue(ca: CertificateAuthority, key: rsa.RSAPrivateKey, name: str) -> int:
    """A certificate signed by a user; its serial."""
    crt = ca.create_certificate(ca.append_csr(make_csr(key, name, san=f"{name}.example")))
    return x509util.load_certificate(crt).serial_number


def test_every_way_of_issuing_is_listed_with_its_approval(
    db_location: str, clock: FakeClock, keys: list[rsa.RSAPrivateKey]
) -> None:
    storage = Storage(db_location, "cas")
    ca = CertificateAuthority(
        storage, CA_SUBJECT, 2048, CRT_LIFE, clock=clock, auto_sign_csr_amount=1
    )
    auto_pem = ca.get_certificate(ca.append_csr(make_csr(keys[0], "auto")))
    user_serial = issue(ca, keys[1], "user")
    renewed_pem = ca.renew(auto_pem, make_csr(keys[2], "ignored"))
    order_csr = x509util.load_certificate_request(make_csr(keys[2], "acme", san="acme.example"))
    acme_pem, now = ca.sign_for_order(order_csr, order_csr)
    ca.store_signed(order_csr, acme_pem, now)
    ca.revoke_serial(user_serial)

    entries = {entry.serial: entry for entry in listing(ca)}
    serials = {
        x509util.load_certificate(pem).serial_number: approval
        for pem, approval in ((auto_pem, "auto"), (renewed_pem, "renewed"), (acme_pem, "acme"))
    }
    assert {serial: entries[serial].approval for serial in serials} == serials
    user = entries[user_serial]
    assert (user.approval, user.subject, user.sans) == ("user", "CN=user", ("DNS:user.example",))
    assert user.key_type == "RSA-2048"
    assert user.revoked_at == int(now.timestamp())
    assert user.not_after - user.not_before >= CRT_LIFE * DAY
    assert [entry.revoked_at for serial, entry in entries.items() if serial != user_serial] == [
        None
    ] * 3
    storage.close()


def test_a_certificate_refused_for_a_signed_row_leaves_no_entry(
    db_location: str, clock: FakeClock, keys: list[rsa.RSAPrivateKey]
) -> None:
    # The row update and the index entries go to the database together: the entries of a
    # certificate the row refuses (it is signed already) must go with the refusal.
    storage = Storage(db_location, "cas")
    ca = CertificateAuthority(storage, CA_SUBJECT, 2048, CRT_LIFE, clock=clock)
    csr_id = ca.append_csr(make_csr(keys[0], "first"))
    ca.create_certificate(csr_id)
    order_csr = x509util.load_certificate_request(make_csr(keys[1], "second"))
    second_pem, now = ca.sign_for_order(order_csr, order_csr)

    with pytest.raises(exceptions.NotFound):
        storage.store_certificate(csr_id, second_pem, int(now.timestamp()), "user")

    assert [entry.subject for entry in listing(ca)] == ["CN=first"]
    storage.close()


def test_filters_select_by_expiry_subject_and_status(
    ca: CertificateAuthority, keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    early = issue(ca, keys[0], "alpha")
    clock.advance(days=10)
    late = issue(ca, keys[1], "Beta")
    revoked = issue(ca, keys[2], "gamma-alpha")
    ca.revoke_serial(revoked)

    def serials(**filters: object) -> set[int]:
        return {entry.serial for entry in listing(ca, **filters)}

    assert serials() == {early, late, revoked}
    assert serials(expiring_within=int((CRT_LIFE - 5) * DAY)) == {early}
    assert serials(subject="ALPHA") == {early, revoked}
    assert serials(subject="%") == serials(subject="_") == set()  # no pattern characters
    assert serials(status="revoked") == {revoked}
    assert serials(status="valid") == {early, late}
    assert serials(serial=late) == {late}
    clock.advance(days=CRT_LIFE - 5)  # early expired
    assert serials(status="valid") == {late}
    assert serials(expiring_within=30 * DAY) == {late, revoked}
    assert serials(expiring_within=30 * DAY, status="valid", subject="bet") == {late}


def test_pages_follow_each_other_without_gap_or_duplicate(
    ca: CertificateAuthority, keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    for number in range(7):
        issue(ca, keys[number % 3], f"svc{number}")
        if number % 2:
            clock.advance(hours=1)  # some share a notAfter, others do not
    whole, cursor = ca.list_certificates(Query(limit=1000))
    assert cursor is None and len(whole) == 7
    assert [e.not_after for e in whole] == sorted(e.not_after for e in whole)
    for limit in (1, 2, 3, 6, 7):
        assert listing(ca, limit=limit) == whole
    assert ca.list_certificates(Query(limit=7))[1] is None


def test_pages_read_while_certificates_are_issued(
    ca: CertificateAuthority, keys: list[rsa.RSAPrivateKey]
) -> None:
    """Every certificate there when the listing starts is listed exactly once, whatever the
    writer adds meanwhile (with one notAfter for all, new serials fall before and after the
    cursor)."""
    before = {issue(ca, keys[number % 3], f"old{number}") for number in range(30)}
    issued: list[int] = []
    started, stop = threading.Event(), threading.Event()

    def writer() -> None:
        while not stop.is_set():
            issued.append(issue(ca, keys[len(issued) % 3], f"new{len(issued)}"))
            started.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert started.wait(60)
        listed = [entry.serial for entry in listing(ca, limit=3)]
    finally:
        stop.set()
        thread.join()
    assert len(listed) == len(set(listed))
    assert before <= set(listed) <= before | set(issued)
    assert {entry.serial for entry in listing(ca)} == before | set(issued)


def _write_as_the_reference(database: Engine, revoked: int) -> None:
    """Certificates without inventory entries, one revoked in the revoked table alone."""
    with database.writing() as connection:
        connection.execute("DELETE FROM cas_inventory")
        connection.execute(
            "INSERT INTO casrevoked VALUES (?, ?, ?)", (str(revoked), 1234567890, 2**40)
        )


def test_certificates_the_reference_stored_are_indexed_at_open(
    db_location: str, ca: CertificateAuthority, keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    """A reference caucased writes crt and revoked rows only: they are listed all the same,
    approved "unknown", revoked when its revoked table says so."""
    first, second = issue(ca, keys[0], "ref1"), issue(ca, keys[1], "ref2")
    with contextlib.closing(open_database(db_location)) as database:
        _write_as_the_reference(database, second)
    with contextlib.closing(Storage(db_location, "cas")) as storage:
        reopened = CertificateAuthority(storage, CA_SUBJECT, 2048, CRT_LIFE, clock=clock)
        entries = {entry.serial: entry for entry in listing(reopened)}
        assert {serial: entry.approval for serial, entry in entries.items()} == {
            first: "unknown",
            second: "unknown",
        }
        assert (entries[first].revoked_at, entries[second].revoked_at) == (None, 1234567890)
        assert entries[first].subject == "CN=ref1"
        assert {e.serial for e in listing(reopened, status="revoked")} == {second}


def test_a_backup_brings_the_inventory_back(
    ca: CertificateAuthority, db_location: str, keys: list[rsa.RSAPrivateKey], tmp_path: Path
) -> None:
    """Dumps carry the table, and restoring one (the statement allow-list) rebuilds it."""
    serial = issue(ca, keys[0], "kept")
    ca.revoke_serial(serial)
    before = listing(ca)
    with contextlib.closing(open_database(db_location)) as database:
        statements = list(database.dump())
    restored = str(tmp_path / "restored.sqlite")
    restore_database(restored, iter(statements))
    with contextlib.closing(Storage(restored, "cas")) as storage:
        assert storage.certificate_inventory.page(Query(), 0) == (before, None)
    assert [(entry.approval, entry.revoked_at is not None) for entry in before] == [("user", True)]


def _plan(connection: sqlite3.Connection, query: Query) -> str:
    sql, parameters = page_sql("cas", query, 1_800_000_000)
    rows = connection.execute("EXPLAIN QUERY PLAN " + sql, parameters).fetchall()
    return "\n".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize(
    "query",
    [
        Query(expiring_within=30 * DAY),
        Query(expiring_within=30 * DAY, cursor="1800000000:12345"),
        Query(expiring_within=30 * DAY, status="valid", subject="web"),
        Query(cursor="1800000000:12345"),
    ],
)
def test_expiring_within_is_answered_from_the_index(tmp_path: Path, query: Query) -> None:
    path = tmp_path / "caucase.sqlite"
    Storage(str(path), "cas").close()
    connection = sqlite3.connect(path)
    try:
        plan = _plan(connection, query)
    finally:
        connection.close()
    assert "SEARCH i USING INDEX cas_inventory_not_after (" in plan, plan
    assert "SCAN i" not in plan and "TEMP B-TREE" not in plan, plan
    assert "SEARCH r USING INDEX sqlite_autoindex_casrevoked_1 (serial=?)" in plan, plan


# GET {ca}/inventory


@pytest.fixture
def dep(tmp_path: Path, clock: FakeClock, keys: list[rsa.RSAPrivateKey]) -> Deployment:
    return deploy(tmp_path, clock, keys[0])


def test_only_cau_users_over_https_may_list(
    dep: Deployment, keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    """Refused exactly as the pending CSR list is, for every credential."""
    service = dep.cas.create_certificate(dep.cas.append_csr(make_csr(keys[1], "svc")))
    credentials: list[dict[str, object]] = [
        {},
        {"https": True},
        {"https": True, "cert": service},
        {"https": True, "cert": foreign_certificate(keys[2], clock())},
        {"cert": dep.user_crt},
    ]
    for authority in ("cas", "cau"):
        for credential in credentials:
            reply = call(dep.app, "GET", f"/{authority}/inventory", **credential)  # type: ignore[arg-type]
            reference = call(dep.app, "GET", f"/{authority}/csr", **credential)  # type: ignore[arg-type]
            assert (reply.status, reply.body) == (reference.status, reference.body)
            assert reply.status == 401 and reply.header("WWW-Authenticate") == "transport"
        reply = call(dep.app, "GET", f"/{authority}/inventory", https=True, cert=dep.user_crt)
        assert reply.status == 200, reply.body
        assert reply.header("Cache-Control") == "private"
    cau_page = call(dep.app, "GET", "/cau/inventory", https=True, cert=dep.user_crt).json()
    assert [entry["subject"] for entry in cau_page["certificates"]] == ["CN=admin"]
    assert cau_page["certificates"][0]["approval"] == "auto"


def test_the_listing_document(dep: Deployment, keys: list[rsa.RSAPrivateKey]) -> None:
    crt = dep.cas.create_certificate(dep.cas.append_csr(make_csr(keys[1], "web", san="w.example")))
    serial = x509util.load_certificate(crt).serial_number
    dep.cas.revoke_serial(serial)
    for number in range(3):
        dep.cas.create_certificate(dep.cas.append_csr(make_csr(keys[2], f"more{number}")))
    reply = call(
        dep.app, "GET", "/cas/inventory?subject=WEB&status=revoked", https=True, cert=dep.user_crt
    )
    assert reply.header("Content-Type") == "application/json"
    now = dep.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
    (entry,) = reply.json()["certificates"]
    assert reply.json()["next"] is None
    assert entry == {
        "serial": str(serial),
        "not_before": entry["not_before"],
        "not_after": entry["not_after"],
        "subject": "CN=web",
        "sans": ["DNS:w.example"],
        "key_type": "RSA-2048",
        "approval": "user",
        "revoked": True,
        "revoked_at": now,
    }
    assert entry["not_before"] < now < entry["not_after"]
    first = call(dep.app, "GET", "/cas/inventory?limit=3", https=True, cert=dep.user_crt).json()
    assert len(first["certificates"]) == 3 and first["next"]
    rest = call(
        dep.app, "GET", f"/cas/inventory?limit=3&cursor={first['next']}", https=True,
        cert=dep.user_crt,
    ).json()  # fmt: skip
    assert (len(rest["certificates"]), rest["next"]) == (1, None)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "limit=1&limit=2",
        "cursor=nonsense",
        "cursor=1:2:3",
        "cursor=9999999999999999999:1",
        "serial=" + "9" * 61,
        "expiring_within=-1",
        "expiring_within=1.5",
        "expiring_within=100001",
        "status=expired",
        "subject=",
        "subject=%FF",
        "serial=0x12",
        "colour=blue",
        "limit",
        "a=1&&b=2",
    ],
)
def test_bad_query_parameters_are_400(dep: Deployment, query: str) -> None:
    reply = call(dep.app, "GET", f"/cas/inventory?{query}", https=True, cert=dep.user_crt)
    assert reply.status == 400, (query, reply.body)
    assert reply.body and b"\n" not in reply.body


def test_a_user_refused_before_the_query_is_read(dep: Deployment) -> None:
    """A bad query from someone not authenticated learns nothing about the parameters."""
    assert call(dep.app, "GET", "/cas/inventory?limit=0", https=True).status == 401


def test_times_are_utc(dep: Deployment) -> None:
    entry = call(dep.app, "GET", "/cau/inventory", https=True, cert=dep.user_crt).json()[
        "certificates"
    ][0]
    parsed = datetime.datetime.strptime(entry["not_after"], "%Y-%m-%dT%H:%M:%SZ")
    crt = x509util.load_certificate(dep.user_crt)
    assert parsed.replace(tzinfo=datetime.timezone.utc) == crt.not_valid_after_utc


def test_postgresql_reads_expiring_within_from_the_index(postgres_url: str) -> None:
    now = 1_800_000_000
    rows = [
        (str(2**100 + number), now - DAY, now + number * 60, f"CN=h{number}", "[]", "RSA-2048",
         "auto")
        for number in range(20_000)
    ]  # fmt: skip
    with (
        contextlib.closing(Storage(postgres_url, "cas")),
        contextlib.closing(open_database(postgres_url)) as database,
    ):
        with database.writing() as connection:
            connection.executemany(
                "INSERT INTO cas_inventory (serial, not_before, not_after, subject, sans, "
                "key_type, approval) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        with database.writing() as connection:
            connection.execute("ANALYZE cas_inventory")
        for query in (Query(expiring_within=DAY), Query(expiring_within=DAY, cursor=f"{now}:1")):
            sql, parameters = page_sql("cas", query, now)
            with database.reading() as connection:
                plan = "\n".join(
                    row[0] for row in connection.execute("EXPLAIN " + sql, parameters).fetchall()
                )
            assert "cas_inventory_not_after" in plan and "Seq Scan on cas_inventory" not in plan
