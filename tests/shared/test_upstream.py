"""Upstream URL rules: no internal addresses unless the deployment allows them."""

from __future__ import annotations

import time

import pytest

from shared.upstream import UpstreamUrlError, check_upstream_url


def public(host: str, port: int) -> list[str]:
    return ["93.184.216.34"]


def internal(host: str, port: int) -> list[str]:
    return ["93.184.216.34", "10.1.2.3"]  # one internal answer is enough to refuse


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/mcp",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
    ],
)
def test_internal_literals_are_refused(url: str) -> None:
    with pytest.raises(UpstreamUrlError, match="not allowed"):
        check_upstream_url(url, allow_private=False, resolver=public)


def test_names_resolving_inside_are_refused() -> None:
    with pytest.raises(UpstreamUrlError):
        check_upstream_url("https://tricky.example/mcp", allow_private=False, resolver=internal)
    with pytest.raises(UpstreamUrlError):
        check_upstream_url("http://localhost:9000/mcp", allow_private=False)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "only http and https"),
        ("javascript:alert(1)", "only http and https"),
        ("http:///nohost", "no host"),
        ("https://user:secret@example.com/mcp", "credential field"),
        ("http://example.com:99999/", "not a valid URL"),
    ],
)
def test_malformed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(UpstreamUrlError, match=message):
        check_upstream_url(url, allow_private=True, resolver=public)


def test_public_and_allowed_private_urls_pass() -> None:
    assert check_upstream_url("https://example.com/mcp", allow_private=False, resolver=public) == (
        "https://example.com/mcp"
    )
    assert check_upstream_url("http://127.0.0.1:8000/mcp", allow_private=True) == (
        "http://127.0.0.1:8000/mcp"
    )


def test_the_hot_path_check_remembers_a_passed_url_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared import upstream

    lookups: list[str] = []

    def counting(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["93.184.216.34"]

    monkeypatch.setattr(upstream, "_resolve", counting)
    monkeypatch.setattr(upstream, "_checked", {})
    url = "https://cached.example/mcp"
    for _ in range(3):
        assert upstream.check_upstream_url_cached(url, allow_private=False) == url
    assert lookups == ["cached.example"]
    later = time.monotonic() + upstream._CHECK_TTL_SECONDS + 1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    upstream.check_upstream_url_cached(url, allow_private=False)
    assert lookups == ["cached.example", "cached.example"]  # resolved again after the TTL
