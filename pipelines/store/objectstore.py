"""Object-store roots (``s3://``, ``gs://`` ...): the bucket must exist, and units are leased, not locked.

Local roots lock a unit with ``fcntl.flock`` (:meth:`pipelines.store.results.Store.unit_lock`); an object store has no
such lock. On S3 (and S3-compatible servers that implement conditional writes: AWS S3, MinIO, moto) a unit is
held through a **lease object** ``<root>/_locks/<unit>.lock``:

- taken with a conditional create (``PUT`` with ``If-None-Match: *``): of two writers, exactly one creates it,
  the other gets ``412 Precondition Failed`` and waits;
- renewed by its holder every ``ttl / 3`` seconds with a conditional overwrite (``If-Match`` its own ETag);
- released with a conditional delete (``If-Match`` its own ETag), so a writer never removes another's lease;
- expired when the server's clock says it was last written more than ``ttl`` seconds ago (its holder was killed,
  or lost its node): a waiter then takes it over with a conditional overwrite (``If-Match`` the stale ETag), so
  of two waiters one wins.

The lease's ``ttl`` is ``LEE_LEASE_TTL_S`` (seconds, default :data:`DEFAULT_LEASE_TTL_S`), read by the process that
takes the lease and stored with it (object metadata), so waiters judge it by the holder's own ``ttl``.

Limits (docs/object-stores.md): a holder that cannot renew for ``ttl`` seconds (a paused process, a network
partition) loses its lease, and a waiter may then compute the unit a second time; the unit's ``runs`` row is
still written whole by each, so its data is never mixed, only computed twice. A server that ignores
``If-None-Match`` / ``If-Match`` gives no exclusion at all. ``gs://`` and other object stores have no lease here:
"each unit once" holds there only for one writer at a time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "BUCKET_PROTOCOLS",
    "DEFAULT_LEASE_TTL_S",
    "LEASE_PROTOCOLS",
    "LEASE_TTL_ENV",
    "LeaseState",
    "bucket_of",
    "lease_state",
    "lease_ttl",
    "missing_bucket",
    "object_lease",
]

BUCKET_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "r2")
"""fsspec protocols whose first path component is a bucket (or container) that a write would create."""

LEASE_PROTOCOLS = ("s3", "s3a")
"""Protocols with conditional writes through s3fs (``If-None-Match`` / ``If-Match``): units are leased."""

LEASE_TTL_ENV = "LEE_LEASE_TTL_S"
DEFAULT_LEASE_TTL_S = 60.0


def bucket_of(path: str) -> str:
    """The bucket of an fsspec object-store path (``bucket/prefix/...`` -> ``bucket``)."""
    return path.strip("/").split("/", 1)[0]


def missing_bucket(fs: Any, path: str) -> str | None:
    """The bucket of ``path`` if it does not exist (None when it does); errors other than "not found" propagate.

    A root's bucket is never created by lee: a mistyped bucket name would otherwise become a new bucket. On S3
    the bucket is asked for (``HEAD``): "not found" means missing; "access denied" (credentials that may write
    under a prefix but not look at the bucket) counts as existing, and the write itself says if it is not
    allowed. Other errors (the endpoint cannot be reached) propagate.
    """
    bucket = bucket_of(path)
    if hasattr(fs, "call_s3"):  # s3fs: its exists() says False for any error, a denied probe included
        try:
            fs.call_s3("head_bucket", Bucket=bucket)
        except FileNotFoundError:
            return bucket
        except PermissionError:
            return None
        return None
    with contextlib.suppress(Exception):  # a filesystem without a listing cache
        fs.invalidate_cache(bucket)
    return None if fs.exists(bucket) else bucket


def lease_ttl() -> float:
    """The lease time of this process (``LEE_LEASE_TTL_S``, default :data:`DEFAULT_LEASE_TTL_S`) in seconds."""
    text = os.environ.get(LEASE_TTL_ENV, "")
    try:
        ttl = float(text) if text else DEFAULT_LEASE_TTL_S
    except ValueError:
        raise ValueError(f"{LEASE_TTL_ENV}={text!r} is not a number of seconds") from None
    if not ttl > 0:
        raise ValueError(f"{LEASE_TTL_ENV}={text!r} must be positive")
    return ttl


class LeaseState:
    """A lease object as the server reports it: ETag, age (server clock) and the holder's ``ttl``."""

    def __init__(self, etag: str, age_s: float, ttl_s: float, holder: str):
        self.etag, self.age_s, self.ttl_s, self.holder = etag, age_s, ttl_s, holder

    @property
    def expired(self) -> bool:
        return self.age_s > self.ttl_s


def _split(path: str) -> tuple[str, str]:
    bucket, _, key = path.strip("/").partition("/")
    return bucket, key


def lease_state(fs: Any, path: str) -> LeaseState | None:
    """The lease at ``path`` (None if there is none): one ``HEAD``, whose ``Date`` header dates its age."""
    bucket, key = _split(path)
    try:
        head = fs.call_s3("head_object", Bucket=bucket, Key=key)
    except FileNotFoundError:
        return None
    meta = head.get("Metadata") or {}
    try:
        now = parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"])
    except (KeyError, TypeError, ValueError):
        now = dt.datetime.now(dt.timezone.utc)
    age = (now - head["LastModified"]).total_seconds()
    try:
        ttl = float(meta.get("lee-ttl-s", DEFAULT_LEASE_TTL_S))
    except ValueError:
        ttl = DEFAULT_LEASE_TTL_S
    return LeaseState(head["ETag"], age, ttl, meta.get("lee-holder", "?"))


def _put(fs: Any, path: str, body: bytes, ttl: float, holder: str, **condition: str) -> str | None:
    """A conditional ``PUT`` of the lease: its new ETag, or None when the condition did not hold."""
    try:
        out = fs.pipe_file(path, body, Metadata={"lee-ttl-s": f"{ttl:g}", "lee-holder": holder}, **condition)
    except FileExistsError:  # 412 Precondition Failed (s3fs maps it to FileExistsError or EINVAL)
        return None
    except FileNotFoundError:  # If-Match on a lease deleted meanwhile
        return None
    except OSError as exc:
        if "pre-condition" in str(exc).lower() or "precondition" in str(exc).lower():
            return None
        raise
    return out["ETag"]


@contextlib.contextmanager
def object_lease(fs: Any, path: str, *, poll_s: float = 0.5) -> Iterator[bool]:
    """Hold the lease object ``path`` while the body runs (waiting for a live holder first); yields True.

    See the module docstring for the protocol. The lease is renewed by a daemon thread while the body runs;
    a renewal that fails (the lease expired and was taken over) is reported on stderr.
    """
    ttl = lease_ttl()
    holder = f"{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:12]}"
    renewal = 0

    def body() -> bytes:
        return json.dumps({"holder": holder, "ttl_s": ttl, "renewal": renewal, "written": time.time()}).encode()

    etag = None
    while etag is None:
        etag = _put(fs, path, body(), ttl, holder, mode="create")
        if etag is not None:
            break
        state = lease_state(fs, path)
        if state is None:
            continue  # released meanwhile: create it again
        if state.expired:  # its holder died: take it over, unless another waiter or a renewal came first
            etag = _put(fs, path, body(), ttl, holder, IfMatch=state.etag)
            if etag is not None:
                print(
                    f"lee: took over the expired lease {path} of {state.holder} ({state.age_s:.0f} s old, "
                    f"ttl {state.ttl_s:g} s)",
                    file=sys.stderr,
                )
                break
        time.sleep(poll_s)

    stop = threading.Event()
    lock = threading.Lock()
    current = {"etag": etag}

    def lost() -> None:
        print(
            f"lee: warning: lost the lease {path} (not renewed within {ttl:g} s, taken over by another run); "
            "the unit may be computed twice",
            file=sys.stderr,
        )

    def renew() -> None:
        nonlocal renewal
        while not stop.wait(ttl / 3):
            with lock:
                renewal += 1
                try:
                    new = _put(fs, path, body(), ttl, holder, IfMatch=current["etag"])
                except Exception as exc:  # noqa: BLE001 - a failed renewal: try again at the next tick
                    print(f"lee: warning: cannot renew the lease {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    continue
                if new is None:
                    lost()
                    current["etag"] = None
                    return
                current["etag"] = new

    thread = threading.Thread(target=renew, name=f"lee-lease-{path.rsplit('/', 1)[-1]}", daemon=True)
    thread.start()
    try:
        yield True
    finally:
        stop.set()
        thread.join()
        if current["etag"] is not None:
            bucket, key = _split(path)
            try:  # only while it is still this holder's lease (If-Match): never another's
                fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=current["etag"])
            except FileNotFoundError:
                lost()
            except Exception as exc:  # noqa: BLE001 - the unit is written: a lease left behind only expires
                if "precondition" in str(exc).lower().replace("-", ""):
                    lost()  # taken over before a renewal noticed
                else:
                    print(
                        f"lee: warning: cannot release the lease {path} ({type(exc).__name__}: {exc}); it expires "
                        f"in {ttl:g} s",
                        file=sys.stderr,
                    )
            with contextlib.suppress(Exception):
                fs.invalidate_cache(path)
