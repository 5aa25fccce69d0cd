"""Connecting to a Ray cluster: the authentication token, and one clear error per failure.

Ray (>= 2.60) protects a cluster's GCS and job server with a token when the head runs with
``RAY_AUTH_MODE=token``. A client needs the token *and* ``RAY_AUTH_MODE=token`` on its own side,
read when Ray is imported. :func:`prepare_auth` finds the token (``RAY_AUTH_TOKEN``, the file at
``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``) and, when ``RAY_AUTH_MODE`` is unset, sets it to
``token`` for this process (a token-mode client also connects to clusters without
authentication). ``lee`` calls it before it imports Ray.

:func:`check_gcs` asks the GCS at ``host:port`` for its cluster id over gRPC, with the token, and
turns what goes wrong (nothing listens, the token is missing or wrong) into a
:class:`~pipelines.cli.UsageError` naming the fix, instead of ``ray.init``'s 20 s of retries and a
traceback. :func:`job_client` does the same for the job server (``lee submit``, ``status``, ``logs``).
:func:`init_ray` joins a cluster (after :func:`probe_address`) or starts an embedded local Ray.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

from pipelines.errors import UsageError

__all__ = [
    "auth_fix",
    "auth_token",
    "check_gcs",
    "describe_error",
    "init_ray",
    "job_client",
    "memory_kill",
    "prepare_auth",
    "probe_address",
]

_GET_CLUSTER_ID = "/ray.rpc.NodeInfoGcsService/GetClusterId"  # the GCS's first call from any client


def auth_token() -> tuple[str, str] | None:
    """``(token, where it came from)`` of the first of ``RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH``,
    ``~/.ray/auth_token`` that holds one (Ray's own order); None if none does."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    paths = [os.environ["RAY_AUTH_TOKEN_PATH"]] if os.environ.get("RAY_AUTH_TOKEN_PATH") else []
    paths.append(str(Path.home() / ".ray" / "auth_token"))
    for path in paths:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text:
            return text, path
    return None


def prepare_auth() -> str | None:
    """Set ``RAY_AUTH_MODE=token`` for this process when it is unset and a token is found.

    Ray reads the mode when it is imported, so this runs first (``lee``'s entry point does). Returns
    where the token comes from, or None without one. An explicit ``RAY_AUTH_MODE`` is left alone.
    """
    found = auth_token()
    if found and "RAY_AUTH_MODE" not in os.environ and "ray" not in sys.modules:
        os.environ["RAY_AUTH_MODE"] = "token"
    return found[1] if found else None


def auth_fix() -> str:
    """What to do about a token the cluster refused, given what this side has."""
    found = auth_token()
    get = "`ray get-auth-token` on the head prints the cluster's token"
    if found is None:
        return (
            f"the cluster requires token authentication and no token was found here: {get}; set it as "
            "RAY_AUTH_TOKEN or save it to ~/.ray/auth_token"
        )
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return (
            f"a token was found ({found[1]}) but RAY_AUTH_MODE is {os.environ.get('RAY_AUTH_MODE')!r}: "
            "set RAY_AUTH_MODE=token (or unset it: lee then sets it)"
        )
    return (
        f"the cluster rejected the token from {found[1]}: {get}; set it as RAY_AUTH_TOKEN or save it to "
        "~/.ray/auth_token"
    )


def check_gcs(address: str, timeout: float = 5.0) -> None:
    """Fail fast, with the fix, when the GCS at ``host:port`` is unreachable or refuses this side's token.

    Raises:
        UsageError: Nothing answers at ``address`` within ``timeout``; the token is missing or wrong.
    """
    try:
        import grpc
    except ImportError:  # pragma: no cover - Ray depends on grpcio
        return
    found = auth_token() if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else None  # what Ray sends
    metadata = [("authorization", f"Bearer {found[0]}")] if found else []
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(_GET_CLUSTER_ID)
        try:
            call(b"", timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise UsageError(f"Ray cluster at {address!r}: {auth_fix()}") from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise UsageError(
                    f"Ray address {address!r} is unreachable ({exc.details() or code.name}); is the cluster up? "
                    "(`ray start --head` prints the address to join)"
                ) from None
            # Any other answer came from a GCS that let this side in.


def describe_error(address: str, exc: BaseException) -> str:
    """One line for a failure to talk to the job server at ``address``, naming the fix."""
    try:
        from ray.exceptions import AuthenticationError
    except ImportError:  # pragma: no cover
        AuthenticationError = ()  # type: ignore[assignment]  # noqa: N806
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, AuthenticationError) or "authentication" in text.lower():
        return f"Ray job server at {address!r}: {auth_fix()}"
    if isinstance(exc, ConnectionError | OSError) or "connect" in text.lower():
        return (
            f"cannot reach the Ray job server at {address!r} ({text}); is the cluster up, and is this the "
            "dashboard address (http://HEAD:8265)?"
        )
    return f"Ray job server at {address!r}: {type(exc).__name__}: {text}"


def job_client(address: str):
    """A ``JobSubmissionClient`` for ``address``; any failure to connect is a :class:`UsageError` with the fix."""
    prepare_auth()
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - connection and auth errors come in many types
        raise UsageError(describe_error(address, exc)) from None


_OOM_USAGE = (
    # Ray >= 2.56: "... Memory on the node (IP: ..., ID: ...) was 22.27GB used / 23.59GB limit (0.944137)\nOOM kill
    # reason: Memory usage 24075300864B exceeded threshold of 24058705920B (95.0% of 25324953600B limit)"
    re.compile(r"was ([\d.]+\s*[KMGT]?B) used / ([\d.]+\s*[KMGT]?B) limit \(([\d.]+)\)"),
    # older Ray: "... was running was 32.62GB / 33.28GB (0.980175), which exceeds the memory usage threshold of 0.96"
    re.compile(
        r"was ([\d.]+\s*[KMGT]?B) / ([\d.]+\s*[KMGT]?B) \(([\d.]+)\), which exceeds the memory usage "
        r"threshold of (\d+(?:\.\d+)?)"
    ),
)
_OOM_THRESHOLD = re.compile(r"exceeded threshold of \d+\s*B \((\d+(?:\.\d+)?)% of")


def memory_kill(text: str) -> str | None:
    """None unless ``text`` (a Ray error or job message) says Ray's memory monitor killed a worker; then the
    node's memory use in a few words: ``" (node memory 7.1GB / 7.5GB = 0.96, above its threshold 0.95)"``
    (empty when Ray's message gives no figures; without the threshold when it gives none)."""
    if "running low on memory" not in text.lower():
        return None
    for pattern in _OOM_USAGE:
        m = pattern.search(text)
        if m:
            break
    else:
        return ""
    threshold = m.group(4) if m.lastindex == 4 else None
    if threshold is None:
        t = _OOM_THRESHOLD.search(text)
        threshold = float(t.group(1)) / 100 if t else None
    above = f", above its threshold {float(threshold):.2f}" if threshold is not None else ""
    return f" (node memory {m.group(1)} / {m.group(2)} = {float(m.group(3)):.2f}{above})"


def probe_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a Ray address nothing listens on, or whose GCS refuses this side's token
    (``ray.init`` would retry for 20 s or minutes, then raise a traceback).

    ``host:port`` (the GCS) is asked for its cluster id with the token (:func:`pipelines.running.cluster.check_gcs`);
    ``ray://host:port`` (Ray Client) is probed with a TCP connect; ``auto``, ``local`` and other forms are
    left to Ray.
    """
    client = address.startswith("ray://")
    target = address.removeprefix("ray://")
    if "://" in target or address in ("auto", "local"):
        return
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"Ray address {address!r} is not host:port or ray://host:port")
    host = host.strip("[]") or "127.0.0.1"
    if not client:
        check_gcs(f"{host}:{port}", timeout=timeout)
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise UsageError(
            f"Ray address {address!r} is unreachable ({type(exc).__name__}: {exc or 'timed out'} within {timeout:g}s); "
            "is the cluster up?"
        ) from None


def init_ray(address: str | None) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start an embedded local Ray.

    The address is probed first (:func:`probe_address`: unreachable, token missing or refused). The
    token mode is set before Ray is imported (:func:`pipelines.running.cluster.prepare_auth`); an embedded Ray
    is started with ``RAY_AUTH_MODE=token`` stated (Ray's default for new local clusters, without its
    notice) unless the mode is set.
    """
    prepare_auth()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        probe_address(address)
    elif "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:  # embedded local Ray
            ray.init(include_dashboard=False, **kwargs)
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
        cause = f"{exc} {exc.__cause__ or ''}"
        fix = auth_fix() if "auth" in cause.lower() else "is the cluster up, and is this its GCS address (HEAD:6379)?"
        raise UsageError(f"cannot join the Ray cluster at {address!r}: {fix}") from None
