# The one place the fan-out makes an HTTP call (as broker/core/log's storage modules are the one place that touches
# files): a webhook POST with httpx, run only inside a Job's work, in a worker thread the server gives it, never
# on the event loop. It resolves the host, checks every address against the allow-list (webhook.py) and connects to
# a checked address, so a name re-pointed at an internal address between subscribe and delivery (DNS rebinding)
# is refused; redirects are not followed and proxies from the environment are not used. Must not know about
# subscriptions, cursors, queues or protocols.
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import httpx

from millpond.broker.core.fanout.webhook import AllowList


@dataclass(frozen=True, slots=True)
class HttpResult:
    """How one webhook request ended: ``status`` (None: no answer), ``error`` (what went wrong, "" for an answer),
    ``permanent``: trying again cannot help (the address is not allowed)."""

    status: int | None
    error: str = ""
    permanent: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class HttpPoster:
    """POSTs webhook requests through one httpx client (its connections kept and shared by the worker threads)."""

    def __init__(self, allow: AllowList) -> None:
        self.allow = allow
        self._client = httpx.Client(trust_env=False, follow_redirects=False)

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> HttpResult:
        """Blocking: resolve, check, POST; never raises (a failure is the result's ``error``)."""
        try:
            parts = httpx.URL(url)
            host = parts.host
            port = parts.port or (443 if parts.scheme == "https" else 80)
            addresses = self._resolve(host, port)
        except PermissionError as exc:
            return HttpResult(None, str(exc), permanent=True)
        except (OSError, httpx.InvalidURL, ValueError) as exc:
            return HttpResult(None, f"cannot resolve the webhook host: {exc}")
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        headers = {**headers, "Host": parts.netloc.decode("ascii")}
        for i, address in enumerate(addresses):  # the next address only when this one cannot be reached
            try:
                answer = self._client.post(parts.copy_with(host=address), content=body, headers=headers,
                                           timeout=timeout_s, extensions=extensions)
                break
            except httpx.ConnectError as exc:
                if i == len(addresses) - 1:
                    return HttpResult(None, f"ConnectError: {exc}"[:300])
            except httpx.TimeoutException:
                return HttpResult(None, f"no answer within {timeout_s:g} s")
            except httpx.HTTPError as exc:
                return HttpResult(None, f"{type(exc).__name__}: {exc}"[:300])
        return HttpResult(answer.status_code, "" if 200 <= answer.status_code < 300 else f"HTTP {answer.status_code}")

    def _resolve(self, host: str, port: int) -> list[str]:
        """The addresses of ``host``, every one of them allowed. Raises
        ``PermissionError`` naming a refused address, ``OSError`` when it does not resolve."""
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        for text in addresses:
            if not self.allow.address_allowed(host, ipaddress.ip_address(text.split("%")[0])):
                raise PermissionError(f"webhook host {host!r} resolves to {text}, which webhook_allow does not allow")
        if not addresses:
            raise OSError(f"{host!r} resolves to no address")
        return addresses

    def close(self) -> None:
        self._client.close()


__all__ = ["HttpPoster", "HttpResult"]
