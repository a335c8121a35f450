"""The team's Prefect server may be away for a while (restarted, its database restarted): which
errors mean that, and how long nai3 waits for it before giving up.

Prefect's client retries some calls itself (``PREFECT_CLIENT_MAX_RETRIES``), but not every one: a
refused connection while a run-key lock is being taken surfaces as Prefect's
``ConcurrencySlotAcquisitionError`` at once, and the flow run would fail on a restart it could
simply have waited out. Whatever nai3 asks of the server at a step that must not fail on an
outage goes through :func:`patiently`.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

log = logging.getLogger("nai3.server")

T = TypeVar("T")


def server_away(err: BaseException) -> bool:
    """The Prefect server did not answer (restarting, its database restarting): worth waiting for,
    unlike an error it answered with. Prefect wraps the transport error (``raise … from``), so the
    chain of causes is read too."""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, PrefectHTTPStatusError):
            return e.response.status_code >= 500
        if isinstance(e, (httpx.TransportError, OSError)):
            return True
        e = e.__cause__ or e.__context__
    return False


def server_patience_s() -> float:
    """How long nai3 waits for an absent Prefect server (beyond the client's own retries):
    $NAI3_PREFECT_PATIENCE_S, else 30 min. Training meanwhile goes on where it already runs."""
    from nai3train.ops.settings import env_number

    return env_number("NAI3_PREFECT_PATIENCE_S", 1800.0, 0, 30 * 86400)


def patiently(call: Callable[[], T], what: str, patience_s: float | None = None,
              first_delay_s: float = 1.0, max_delay_s: float = 15.0, say: Callable[[str], None] | None = None) -> T:
    """``call()``, called again (backing off) while the Prefect server does not answer, for up to
    ``patience_s``; an error the server answered with, or one past the patience, is raised. Only
    for calls that are safe to repeat: taking a lock whose request was lost is (an acquired slot
    whose answer never came back expires with its lease). ``say`` gets the two lines that tell
    the server went away and came back (default: a warning on this module's logger)."""
    patience = server_patience_s() if patience_s is None else patience_s
    say = say or log.warning
    start, delay, warned = time.monotonic(), first_delay_s, False
    while True:
        try:
            result = call()
        except Exception as e:  # noqa: BLE001 - only a server that does not answer is waited for
            if not server_away(e) or time.monotonic() - start > patience:
                raise
            if not warned:
                say(f"the Prefect server does not answer while {what} ({type(e).__name__}); retrying for up to "
                    f"{patience:.0f} s")
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, max_delay_s)
            continue
        if warned:
            say(f"the Prefect server answers again: {what} after {time.monotonic() - start:.0f} s")
        return result
