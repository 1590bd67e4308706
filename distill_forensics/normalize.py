"""Polars expressions that put IP addresses and e-mail addresses into one canonical form.

Two accounts share an address only if their texts compare equal, so every
spelling of the same address must map to the same text: ``1.2.3.4`` and
``::ffff:1.2.3.4``, ``2001:DB8::1`` and ``2001:db8:0:0:0:0:0:1``,
``Jane.Doe+x@googlemail.com`` and ``janedoe@gmail.com``.

ASCII IPv4 text is validated and rewritten by one compiled pass over the
column's bytes. IPv6 text is checked with Python's :mod:`ipaddress`, once per
distinct value in a batch and joined back, so the cost grows with the number
of distinct IPv6 addresses, not with the number of rows; text with non-ASCII
characters goes the same way, with the IPv4 regular expression.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import polars as pl
import pyarrow as pa

from distill_forensics.jit import compiled, string_buffers

__all__ = [
    "FREE_MAIL_DOMAINS",
    "email_domain",
    "email_normalized",
    "ip_clean",
    "ip_network",
    "is_free_mail",
]

# One octet, 0-255, without leading zeros: "01.2.3.4" is ambiguous (octal in
# some parsers) and Python's ipaddress rejects it, so it is rejected here too.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = rf"^{_OCTET}(?:\.{_OCTET}){{3}}$"

IPV4_PREFIX = 24
IPV6_PREFIX = 48


# Batches of one scan repeat the same addresses; a bounded cache saves re-parsing them.
_CACHE_SIZE = 1 << 17


@lru_cache(maxsize=_CACHE_SIZE)
def _canonical_v6(text: str) -> str | None:
    """Canonical text of an IPv6 address, or of the IPv4 address it maps; None if invalid."""
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    # Rebuilding from the integer drops a "%zone" suffix, which names an
    # interface on the logging host rather than anything about the client.
    return str(ipaddress.IPv6Address(int(address)))


@lru_cache(maxsize=_CACHE_SIZE)
def _network_v6(text: str) -> str | None:
    """The /48 (or, for an IPv4-mapped address, the /24) that an IPv6 text belongs to."""
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    if address.ipv4_mapped is not None:
        network = ipaddress.IPv4Network((int(address.ipv4_mapped), IPV4_PREFIX), strict=False)
        return str(network)
    return str(ipaddress.IPv6Network((int(address), IPV6_PREFIX), strict=False))


_NULL, _V4, _V6, _OTHER = 0, 1, 2, 3
"""What :func:`_ipv4_scan` makes of a row: null or invalid, a valid IPv4 address, text
with a colon (an IPv6 candidate), text with non-ASCII bytes."""


@compiled
def _ipv4_scan(
    offsets: np.ndarray, data: np.ndarray, valid: np.ndarray, network: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's class, and the canonical text of its IPv4 address or ``a.b.c.0/24`` network.

    Leading and trailing ASCII whitespace is ignored, as ``str.strip_chars`` does;
    an address is four octets 0-255 without leading zeros, as ``_IPV4`` has it.
    """
    n = len(offsets) - 1
    status = np.zeros(n, dtype=np.int8)
    out_offsets = np.zeros(n + 1, dtype=np.int64)
    room = 0
    for r in range(n):
        room += offsets[r + 1] - offsets[r] + 3  # "x.y.z.0/24" outgrows "x.y.z.w" by 3 at most
    out = np.empty(room, dtype=np.uint8)
    pos = 0
    for r in range(n):
        out_offsets[r] = pos
        if not valid[r]:
            continue
        lo, hi = offsets[r], offsets[r + 1]
        other = False
        colon = False
        for q in range(lo, hi):
            if data[q] >= 128:
                other = True
            elif data[q] == 58:
                colon = True
        if other:
            status[r] = _OTHER
            continue
        while lo < hi and (data[lo] == 32 or 9 <= data[lo] <= 13):
            lo += 1
        while hi > lo and (data[hi - 1] == 32 or 9 <= data[hi - 1] <= 13):
            hi -= 1
        if colon:
            status[r] = _V6
            continue
        octets = 0
        ok = True
        last_dot = -1
        q = lo
        while q < hi and ok:
            start = q
            value = 0
            while q < hi and 48 <= data[q] <= 57 and q - start < 4:
                value = value * 10 + data[q] - 48
                q += 1
            digits = q - start
            if digits == 0 or digits > 3 or value > 255 or (digits > 1 and data[start] == 48):
                ok = False
                break
            octets += 1
            if q < hi:
                if data[q] != 46 or octets == 4:
                    ok = False
                    break
                last_dot = q
                q += 1
        if not ok or octets != 4:
            continue
        status[r] = _V4
        stop = last_dot if network else hi
        for q in range(lo, stop):
            out[pos] = data[q]
            pos += 1
        if network:
            for c in (46, 48, 47, 50, 52):  # ".0/24"
                out[pos] = c
                pos += 1
    out_offsets[n] = pos
    return status, out_offsets, out[:pos]


def _ip_series(values: pl.Series, v6: Callable[[str], str | None], *, network: bool) -> pl.Series:
    """Canonical IP (or network) text for each value: ASCII IPv4 in one compiled pass,
    the rest through :func:`_ip_series_general`."""
    offsets, data, valid = string_buffers(values)
    status, out_offsets, out = _ipv4_scan(offsets, data, valid, network)
    result = pl.Series(
        values.name,
        pa.LargeStringArray.from_buffers(
            len(status),
            pa.py_buffer(out_offsets),
            pa.py_buffer(out),
            pa.py_buffer(np.packbits(status == _V4, bitorder="little")),
        ),
        dtype=pl.String,
    )
    rest = np.flatnonzero(status >= _V6)
    if len(rest):
        rows = pl.Series(rest)
        result = result.scatter(rows, _ip_series_general(values.gather(rows), v6, network=network))
    return result


def _ip_series_general(
    values: pl.Series, v6: Callable[[str], str | None], *, network: bool
) -> pl.Series:
    """Canonical IP (or network) text for each value; IPv6 goes through a distinct-value table."""
    text = values.cast(pl.String).str.strip_chars()
    is_v4 = text.str.contains(_IPV4).fill_null(False)
    v4_out = text.str.replace(r"\.[0-9]+$", ".0/24") if network else text

    maybe_v6 = text.str.contains(":", literal=True).fill_null(False)
    distinct = text.filter(maybe_v6).unique()
    if len(distinct):
        table = [v6(value) for value in distinct.to_list()]
        v6_out = text.replace_strict(
            distinct, pl.Series(table, dtype=pl.String), default=None, return_dtype=pl.String
        )
    else:
        v6_out = pl.Series(text.name, [None] * len(text), dtype=pl.String)
    return v4_out.zip_with(is_v4, v6_out).alias(values.name)


def ip_clean(expr: pl.Expr) -> pl.Expr:
    """Validated, canonical IP text; null when the text is not an IP address.

    IPv4 stays as a dotted quad; IPv6 is lowercased and compressed (RFC 5952,
    as Python's ``ipaddress`` prints it); IPv4-mapped IPv6 becomes the IPv4.

    >>> pl.select(ip_clean(pl.lit("::FFFF:1.2.3.4"))).item()
    '1.2.3.4'
    """
    return expr.map_batches(
        lambda s: _ip_series(s, _canonical_v6, network=False),
        return_dtype=pl.String,
        is_elementwise=True,
    )


def ip_network(expr: pl.Expr) -> pl.Expr:
    """The network an address belongs to: ``a.b.c.0/24`` for IPv4, the ``/48`` for IPv6.

    Invalid or null text gives null. The input need not be cleaned first.

    >>> pl.select(ip_network(pl.lit("2001:db8:abcd:12::1"))).item()
    '2001:db8:abcd::/48'
    """
    return expr.map_batches(
        lambda s: _ip_series(s, _network_v6, network=True),
        return_dtype=pl.String,
        is_elementwise=True,
    )


# Providers whose local parts ignore dots; googlemail.com is the same mailbox as gmail.com.
_GMAIL_DOMAINS = ("gmail.com", "googlemail.com")
# One address: everything up to the last "@", then a domain without spaces.
_EMAIL = r"^([^\s@]+)@([^\s@]+?)\.?$"


def _email_parts(expr: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    text = expr.cast(pl.String).str.strip_chars().str.to_lowercase()
    local = text.str.extract(_EMAIL, 1)
    domain = text.str.extract(_EMAIL, 2)
    domain = pl.when(domain == "googlemail.com").then(pl.lit("gmail.com")).otherwise(domain)
    return local, domain


def email_domain(expr: pl.Expr) -> pl.Expr:
    """Lowercased domain of an e-mail address (googlemail.com read as gmail.com); null if invalid.

    >>> pl.select(email_domain(pl.lit("Jane@GoogleMail.com"))).item()
    'gmail.com'
    """
    _, domain = _email_parts(expr)
    return domain


def email_normalized(expr: pl.Expr) -> pl.Expr:
    """One text per mailbox: lowercase, ``+tag`` removed, and for Gmail dots removed.

    Text that is not ``local@domain`` (or whose local part is only a tag) gives null.

    >>> pl.select(email_normalized(pl.lit("Jane.Doe+shop@googlemail.com"))).item()
    'janedoe@gmail.com'
    """
    local, domain = _email_parts(expr)
    local = local.str.replace(r"\+.*$", "")
    local = (
        pl.when(domain.is_in(_GMAIL_DOMAINS))
        .then(local.str.replace_all(".", "", literal=True))
        .otherwise(local)
    )
    return pl.when(local != "").then(pl.concat_str(local, pl.lit("@"), domain))


FREE_MAIL_DOMAINS: frozenset[str] = frozenset(
    {
        # Google, Microsoft, Yahoo, Apple, AOL
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "msn.com",
        "yahoo.com",
        "ymail.com",
        "rocketmail.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "aol.com",
        # Privacy-focused
        "proton.me",
        "protonmail.com",
        "protonmail.ch",
        "pm.me",
        "tutanota.com",
        "tuta.io",
        "tutamail.com",
        # Europe
        "gmx.com",
        "gmx.net",
        "gmx.de",
        "gmx.at",
        "gmx.ch",
        "web.de",
        "mail.com",
        "zoho.com",
        "fastmail.com",
        "libero.it",
        "laposte.net",
        "seznam.cz",
        "wp.pl",
        "o2.pl",
        "interia.pl",
        # Russia
        "mail.ru",
        "bk.ru",
        "inbox.ru",
        "list.ru",
        "rambler.ru",
        "yandex.ru",
        "yandex.com",
        "ya.ru",
        # China, Korea, India
        "qq.com",
        "foxmail.com",
        "163.com",
        "126.com",
        "yeah.net",
        "sina.com",
        "sohu.com",
        "aliyun.com",
        "naver.com",
        "daum.net",
        "hanmail.net",
        "rediffmail.com",
    }
)
# Providers that run the same free service under many country domains
# (yahoo.co.uk, hotmail.fr, gmx.us, yandex.kz, ...).
_FREE_MAIL_FAMILIES = (
    r"^(?:gmx|yandex|yahoo|hotmail|outlook)\.(?:[a-z]{2,3}|co\.[a-z]{2}|com\.[a-z]{2})$"
)


def is_free_mail(expr: pl.Expr) -> pl.Expr:
    """Whether an e-mail address (or a bare domain) belongs to a free webmail provider.

    Null for null or unparseable input.

    >>> pl.select(is_free_mail(pl.lit("someone@yahoo.co.uk"))).item()
    True
    """
    text = expr.cast(pl.String).str.strip_chars().str.to_lowercase()
    domain = (
        pl.when(text.str.contains("@", literal=True))
        .then(email_domain(text))
        .otherwise(text.str.strip_chars_end("."))
    )
    return domain.is_in(FREE_MAIL_DOMAINS) | domain.str.contains(_FREE_MAIL_FAMILIES)
