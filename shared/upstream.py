"""Which upstream MCP URLs Igris may call.

Only http(s). Unless IGRIS_ALLOW_PRIVATE_UPSTREAMS is set, hosts that are, or resolve to,
loopback, private, link-local (cloud metadata lives there), multicast, reserved or
unspecified addresses are refused: a tenant must not be able to point the proxy at the
function's own network. Checked when a server is registered or changed, and again before
each connection (a name may resolve differently later).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from shared.crypto import unseal
from shared.mcp_client import UpstreamAuth
from shared.models import McpServer

Resolver = Callable[[str, int], Iterable[str]]


class UpstreamUrlError(ValueError):
    """Why a URL is refused (safe to show: names the rule, not internal addresses)."""


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UpstreamUrlError("the host name does not resolve") from None
    return [str(info[4][0]) for info in infos]


_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT


def is_public_address(address: str) -> bool:
    """False for anything that is not a globally routable unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    internal = (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
        or (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_ADDRESS_SPACE)
    )
    return not internal


def check_upstream_url(url: str, *, allow_private: bool, resolver: Resolver | None = None) -> str:
    """The URL, normalized, or UpstreamUrlError saying why it is refused."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise UpstreamUrlError("not a valid URL") from None
    if parts.scheme not in {"http", "https"}:
        raise UpstreamUrlError("only http and https URLs are allowed")
    if not parts.hostname:
        raise UpstreamUrlError("the URL has no host")
    if parts.username or parts.password:
        raise UpstreamUrlError("put credentials in the credential field, not in the URL")
    if parts.fragment:
        raise UpstreamUrlError("the URL must not have a fragment")
    if not allow_private:
        host = parts.hostname
        try:
            addresses: Iterable[str] = [str(ipaddress.ip_address(host))]
        except ValueError:
            addresses = (resolver or _resolve)(
                host, port or (443 if parts.scheme == "https" else 80)
            )
        resolved = list(addresses)
        if not resolved or not all(is_public_address(address) for address in resolved):
            raise UpstreamUrlError(
                "private, loopback, link-local and metadata addresses are not allowed"
            )
    return parts.geturl()


def credential_binding(server: McpServer) -> str:
    """What a server's credential ciphertext is bound to: it opens for this row only."""
    return f"{server.organization_id}:{server.id}"


def upstream_auth(server: McpServer) -> UpstreamAuth:
    """How to authenticate to the server's upstream, with its credential decrypted."""
    credential = None
    if server.credential_ciphertext is not None and server.credential_key_id is not None:
        credential = unseal(
            server.credential_ciphertext,
            server.credential_key_id,
            bound_to=credential_binding(server),
        )
    return UpstreamAuth(
        auth_type=server.auth_type,  # type: ignore[arg-type]
        header_name=server.auth_header_name,
        credential=credential,
    )


_CHECK_TTL_SECONDS = 30.0
_checked: dict[tuple[str, bool], float] = {}
_checked_lock = threading.Lock()


def check_upstream_url_cached(url: str, *, allow_private: bool) -> str:
    """`check_upstream_url` for the proxy's hot path: a URL that passed is trusted for 30 s
    (its host's name is resolved again after that), so a call costs no DNS lookup."""
    key = (url, allow_private)
    now = time.monotonic()
    with _checked_lock:
        passed_at = _checked.get(key)
    if passed_at is not None and now - passed_at < _CHECK_TTL_SECONDS:
        return url
    checked = check_upstream_url(url, allow_private=allow_private)
    with _checked_lock:
        if len(_checked) > 4096:
            _checked.clear()
        _checked[key] = now
    return checked
