"""The SSRF guard: every address class a webhook must not reach, refused with its reason."""

from __future__ import annotations

import pytest

from tasks.webhooks import egress


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://localhost:6379/", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("http://172.16.0.1/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://[fd00::1]/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://[ff02::1]/hook", "multicast"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://[::]/hook", "unspecified"),
    ("http://100.64.0.1/hook", "shared or special-purpose"),
    ("http://240.0.0.1/hook", "reserved"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback (inside an IPv6 address)"),
    ("http://[::ffff:169.254.169.254]/hook", "link-local"),
    ("http://[64:ff9b::a9fe:a9fe]/hook", "link-local"),  # NAT64 of 169.254.169.254
    ("http://[2002:7f00:1::]/hook", "loopback (inside an IPv6 address)"),  # 6to4 of 127.0.0.1
    ("http://2130706433/hook", "loopback"),  # 127.0.0.1 as one number
    ("http://[fec0::1]/hook", "shared or special-purpose"),  # site-local
    ("http://192.88.99.1/hook", "shared or special-purpose"),  # 6to4 relay anycast
])
def test_a_forbidden_address_class_is_refused_with_its_reason(url: str, reason: str) -> None:
    with pytest.raises(egress.Forbidden, match="resolves to .*" + reason.split(" (")[0]):
        egress.check(url)


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://93.184.216.34/x", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("http://user:pw@93.184.216.34/", "credentials"),
    ("http://93.184.216.34:99999/", "port"),
    ("http:///nohost", "no host"),
    ("http://no-such-host.invalid/", "does not resolve"),
])
def test_a_url_that_is_not_a_plain_web_address_is_refused(url: str, reason: str) -> None:
    with pytest.raises(egress.Forbidden, match=reason):
        egress.check(url)


def test_a_submission_may_name_a_host_that_does_not_resolve_yet() -> None:
    # A name with no answer now is checked again at each attempt (and retried there)
    egress.check_submitted("https://no-such-host.invalid/hook")
    with pytest.raises(egress.Unresolved):
        egress.check("https://no-such-host.invalid/hook")
    # but what does resolve must still be public, and a name must be one that could
    with pytest.raises(egress.Forbidden, match="loopback"):
        egress.check_submitted("http://127.0.0.1/hook")
    with pytest.raises(egress.Forbidden, match="not a valid host name"):
        egress.check_submitted(f"http://{'a' * 64}.com/hook")


def test_a_public_address_is_pinned_and_an_allowed_host_passes() -> None:
    public = egress.check("https://93.184.216.34:8443/hook")
    assert (public.scheme, public.port, public.address) == ("https", 8443, "93.184.216.34")
    local = egress.check("http://localhost:9000/hook", allow_hosts={"localhost"})
    assert local.address in {"127.0.0.1", "::1"} and local.port == 9000
