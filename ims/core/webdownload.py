"""Fetch an image for web-download without letting users aim the service.

Every URL — the first and each redirect target — passes the operator's
filters (scheme, host, port), and its host is resolved once and checked:
loopback, private, link-local and other non-global addresses are refused
unless the operator allows them. The connection then goes to the address
that was checked, so a DNS answer cannot change between check and use.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Iterator

import urllib3
from oslo_config import cfg

from ims import errors

CHUNK = 4 * 1024 * 1024


def _port(parts: urllib.parse.SplitResult) -> int:
    try:
        port = parts.port
    except ValueError:
        raise errors.Invalid("URI has an invalid port") from None
    return port or (443 if parts.scheme == "https" else 80)


def check_uri(conf: cfg.ConfigOpts, uri: str) -> urllib.parse.SplitResult:
    """Apply the import filters to ``uri``; raise Invalid when it fails them."""
    f = conf.import_filtering_opts
    if not isinstance(uri, str) or len(uri) > 2048:
        raise errors.Invalid("URI must be a string of at most 2048 characters")
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.Invalid("URI for web-download does not pass filtering: " + uri)
    host = parts.hostname
    port = _port(parts)
    ok = (
        _allowed(parts.scheme, f.allowed_schemes, f.disallowed_schemes)
        and _allowed(host, f.allowed_hosts, f.disallowed_hosts)
        and _allowed(str(port), f.allowed_ports, f.disallowed_ports)
    )
    if not ok or parts.username or parts.password:
        raise errors.Invalid(f"URI for web-download does not pass filtering: {uri}")
    return parts


def _allowed(value: str, allowed: list[str], disallowed: list[str]) -> bool:
    if allowed:
        return value in allowed
    return value not in disallowed


def resolve(conf: cfg.ConfigOpts, host: str, port: int) -> str:
    """Resolve ``host`` to one address that the policy lets IMS reach."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as ex:
        raise errors.Invalid(f"Cannot resolve {host}: {ex}") from None
    addresses = [info[4][0] for info in infos]
    if not conf.import_filtering_opts.allow_private_addresses:
        for address in addresses:
            if not ipaddress.ip_address(address.split("%", 1)[0]).is_global:
                raise errors.Invalid(
                    f"URI for web-download does not pass filtering: {host} is not a public address"
                )
    return addresses[0]


def fetch(conf: cfg.ConfigOpts, uri: str) -> Iterator[bytes]:
    """Yield the body at ``uri`` in chunks, following filtered redirects."""
    f = conf.import_filtering_opts
    for _hop in range(f.max_redirects + 1):
        parts = check_uri(conf, uri)
        port = _port(parts)
        address = resolve(conf, parts.hostname or "", port)
        timeout = urllib3.Timeout(connect=f.timeout, read=f.timeout)
        if parts.scheme == "https":
            pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
                address,
                port,
                timeout=timeout,
                server_hostname=parts.hostname,
                assert_hostname=parts.hostname,
                cert_reqs="CERT_REQUIRED",
            )
        else:
            pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout)
        path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        host_header = parts.netloc.rsplit("@", 1)[-1]
        try:
            resp = pool.urlopen(
                "GET",
                path,
                headers={"Host": host_header, "User-Agent": "ims-web-download"},
                redirect=False,
                retries=False,
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as ex:
            raise errors.Unavailable(f"web-download of {uri} failed: {ex}") from ex
        if resp.status in (301, 302, 303, 307, 308):
            location = resp.headers.get("Location")
            resp.release_conn()
            if not location:
                raise errors.Invalid(f"{uri} redirected without a Location")
            uri = urllib.parse.urljoin(uri, location)
            continue
        if resp.status != 200:
            resp.release_conn()
            raise errors.Invalid(f"web-download of {uri} answered {resp.status}")
        return _stream(resp, uri)
    raise errors.Invalid(f"web-download of {uri}: too many redirects")


def _stream(resp: urllib3.BaseHTTPResponse, uri: str) -> Iterator[bytes]:
    try:
        while True:
            try:
                chunk = resp.read(CHUNK)
            except urllib3.exceptions.HTTPError as ex:
                raise errors.Unavailable(f"web-download of {uri} failed: {ex}") from ex
            if not chunk:
                return
            yield chunk
    finally:
        resp.release_conn()
