"""Polars expressions that put IP addresses and e-mail addresses into one canonical form.

Two accounts share an address only if their texts compare equal, so every
spelling of the same address must map to the same text: ``1.2.3.4`` and
``::ffff:1.2.3.4``, ``2001:DB8::1`` and ``2001:db8:0:0:0:0:0:1``,
``Jane.Doe+x@googlemail.com`` and ``janedoe@gmail.com``.

ASCII IPv4 text, and IPv6 text of hex digits and colons, is validated and
rewritten by one compiled pass over the column's bytes that follows the rules
of Python's :mod:`ipaddress`. The rest (IPv6 with an embedded IPv4 address or a
zone, text with non-ASCII characters) is checked with :mod:`ipaddress` and the
IPv4 regular expression, once per distinct value in a batch and joined back.
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


_NULL, _DONE, _OTHER = 0, 1, 2
"""What :func:`_ip_scan` makes of a row: null or invalid, rewritten by the compiled pass,
left to :func:`_ip_series_general` (non-ASCII text, or an IPv6 candidate with characters
other than hex digits and colons: an embedded IPv4 address, a zone)."""


@compiled
def _is_space(byte: int) -> bool:
    return byte == 32 or 9 <= byte <= 13


@compiled
def _hex_value(byte: int) -> int:
    """The value of an ASCII hex digit, -1 for any other byte."""
    if 48 <= byte <= 57:
        return byte - 48
    if 97 <= byte <= 102:
        return byte - 87
    if 65 <= byte <= 70:
        return byte - 55
    return -1


@compiled
def _put_decimal(out: np.ndarray, pos: int, value: int) -> int:
    if value >= 100:
        out[pos] = 48 + value // 100
        pos += 1
    if value >= 10:
        out[pos] = 48 + value // 10 % 10
        pos += 1
    out[pos] = 48 + value % 10
    return pos + 1


@compiled
def _put_hextet(out: np.ndarray, pos: int, value: int) -> int:
    """``'%x' % value``."""
    shift = 12
    while shift > 0 and (value >> shift) == 0:
        shift -= 4
    while shift >= 0:
        digit = (value >> shift) & 15
        out[pos] = 48 + digit if digit < 10 else 87 + digit
        pos += 1
        shift -= 4
    return pos


@compiled
def _ipv6_parse(data: np.ndarray, lo: int, hi: int, hextets: np.ndarray) -> bool:
    """Parse hex digits and colons ``data[lo:hi]`` into eight hextets as
    ``ipaddress.IPv6Address`` does (same rules for ``::``, leading and trailing
    colons, part counts and hextet lengths); False when it would refuse the text."""
    starts = np.empty(9, np.int64)
    stops = np.empty(9, np.int64)
    n_parts = 0
    start = lo
    for q in range(lo, hi + 1):
        if q == hi or data[q] == 58:
            if n_parts == 9:  # at most 8 colons
                return False
            starts[n_parts] = start
            stops[n_parts] = q
            n_parts += 1
            start = q + 1
    if n_parts < 3 or hi == lo:
        return False
    skip = -1
    for i in range(1, n_parts - 1):
        if starts[i] == stops[i]:
            if skip >= 0:
                return False  # more than one "::"
            skip = i
    if skip >= 0:
        parts_hi = skip
        parts_lo = n_parts - skip - 1
        if starts[0] == stops[0]:
            parts_hi -= 1
            if parts_hi:
                return False
        if starts[n_parts - 1] == stops[n_parts - 1]:
            parts_lo -= 1
            if parts_lo:
                return False
        if 8 - (parts_hi + parts_lo) < 1:
            return False
    else:
        if n_parts != 8 or starts[0] == stops[0] or starts[7] == stops[7]:
            return False
        parts_hi, parts_lo = 8, 0
    hextets[:] = 0
    for i in range(parts_hi + parts_lo):
        part = i if i < parts_hi else n_parts - parts_lo + (i - parts_hi)
        slot = i if i < parts_hi else 8 - parts_lo + (i - parts_hi)
        width = stops[part] - starts[part]
        if width == 0 or width > 4:
            return False
        value = 0
        for q in range(starts[part], stops[part]):
            value = value * 16 + _hex_value(data[q])
        hextets[slot] = value
    return True


@compiled
def _put_ipv6(hextets: np.ndarray, network: bool, out: np.ndarray, pos: int) -> int:
    """What ``_canonical_v6`` (or, with ``network``, ``_network_v6``) prints for the
    parsed address: an IPv4-mapped address as its IPv4 address (or /24), otherwise the
    RFC 5952 text (of the /48)."""
    mapped = hextets[5] == 0xFFFF
    for i in range(5):
        mapped = mapped and hextets[i] == 0
    if mapped:
        pos = _put_decimal(out, pos, hextets[6] >> 8)
        out[pos] = 46
        pos = _put_decimal(out, pos + 1, hextets[6] & 255)
        out[pos] = 46
        pos = _put_decimal(out, pos + 1, hextets[7] >> 8)
        out[pos] = 46
        if network:
            for c in (48, 47, 50, 52):  # "0/24"
                pos += 1
                out[pos] = c
            return pos + 1
        return _put_decimal(out, pos + 1, hextets[7] & 255)
    if network:
        hextets[3:] = 0
    # The longest run of zero hextets (the first of equals), if longer than one, is "::".
    best, best_len, run = -1, 0, 0
    for i in range(8):
        run = run + 1 if hextets[i] == 0 else 0
        if run > best_len:
            best, best_len = i - run + 1, run
    if best_len < 2:
        best, best_len = 8, 0
    for i in range(best):
        if i:
            out[pos] = 58
            pos += 1
        pos = _put_hextet(out, pos, hextets[i])
    if best < 8:
        out[pos] = 58
        out[pos + 1] = 58
        pos += 2
    for i in range(best + best_len, 8):
        if i > best + best_len:
            out[pos] = 58
            pos += 1
        pos = _put_hextet(out, pos, hextets[i])
    if network:
        for c in (47, 52, 56):  # "/48"
            out[pos] = c
            pos += 1
    return pos


@compiled
def _ip_scan(
    offsets: np.ndarray, data: np.ndarray, valid: np.ndarray, network: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's class, and the canonical text of its address or network (``a.b.c.0/24``
    for IPv4, the ``/48`` for IPv6).

    Leading and trailing ASCII whitespace is ignored, as ``str.strip_chars`` does;
    an IPv4 address is four octets 0-255 without leading zeros, as ``_IPV4`` has it;
    IPv6 text of hex digits and colons is read and printed as ``ipaddress`` does.
    """
    n = len(offsets) - 1
    status = np.zeros(n, dtype=np.int8)
    out_offsets = np.zeros(n + 1, dtype=np.int64)
    hextets = np.zeros(8, dtype=np.int64)
    room = 0
    for r in range(n):
        # "x.y.z.0/24" outgrows "x.y.z.w" by 3 at most; IPv6 text (with "/48") takes
        # at most 42 bytes.
        room += offsets[r + 1] - offsets[r] + 3
        for q in range(offsets[r], offsets[r + 1]):
            if data[q] == 58:
                room += 42
                break
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
        while lo < hi and _is_space(data[lo]):
            lo += 1
        while hi > lo and _is_space(data[hi - 1]):
            hi -= 1
        if colon:
            for q in range(lo, hi):
                if data[q] != 58 and _hex_value(data[q]) < 0:
                    other = True
                    break
            if other:
                status[r] = _OTHER
            elif _ipv6_parse(data, lo, hi, hextets):
                status[r] = _DONE
                pos = _put_ipv6(hextets, network, out, pos)
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
        status[r] = _DONE
        stop = last_dot if network else hi
        for q in range(lo, stop):
            out[pos] = data[q]
            pos += 1
        if network:
            for c in (46, 48, 47, 50, 52):  # ".0/24"
                out[pos] = c
                pos += 1
    out_offsets[n] = pos
    # The column built on these bytes keeps the whole buffer: trim what IPv6 room
    # went unused.
    return status, out_offsets, out[:pos].copy() if pos < len(out) // 2 else out[:pos]


def _ip_series(values: pl.Series, v6: Callable[[str], str | None], *, network: bool) -> pl.Series:
    """Canonical IP (or network) text for each value: ASCII text in one compiled pass,
    the rest through :func:`_ip_series_general`."""
    offsets, data, valid = string_buffers(values)
    status, out_offsets, out = _ip_scan(offsets, data, valid, network)
    result = pl.Series(
        values.name,
        pa.LargeStringArray.from_buffers(
            len(status),
            pa.py_buffer(out_offsets),
            pa.py_buffer(out),
            pa.py_buffer(np.packbits(status == _DONE, bitorder="little")),
        ),
        dtype=pl.String,
    )
    rest = np.flatnonzero(status == _OTHER)
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
    domain = text.str.extract(_EMAIL, 2).replace("googlemail.com", "gmail.com")
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
    return expr.map_batches(_normalized_emails, return_dtype=pl.String, is_elementwise=True)


def _normalized_emails(emails: pl.Series) -> pl.Series:
    # Column by column: one expression would work out its parts again at each
    # place it uses them (polars does not share them inside when/then).
    local, domain = _email_parts(pl.col("e"))
    parts = pl.DataFrame({"e": emails}).select(local=local.str.replace(r"\+.*$", ""), domain=domain)
    local, domain = pl.col("local"), pl.col("domain")
    parts = parts.with_columns(
        local=pl.when(domain.is_in(_GMAIL_DOMAINS))
        .then(local.str.replace_all(".", "", literal=True))
        .otherwise(local)
    )
    return parts.select(
        pl.when(local != "").then(pl.concat_str(local, pl.lit("@"), domain)).alias(emails.name)
    ).to_series()


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
    return expr.map_batches(_free_mail, return_dtype=pl.Boolean, is_elementwise=True)


def _free_mail(texts: pl.Series) -> pl.Series:
    # Column by column, as :func:`_normalized_emails`.
    text = pl.col("t")
    frame = pl.DataFrame({"t": texts}).select(
        text.cast(pl.String).str.strip_chars().str.to_lowercase()
    )
    frame = frame.select(
        pl.when(text.str.contains("@", literal=True))
        .then(email_domain(text))
        .otherwise(text.str.strip_chars_end("."))
    )
    return frame.select(
        (text.is_in(FREE_MAIL_DOMAINS) | text.str.contains(_FREE_MAIL_FAMILIES)).alias(texts.name)
    ).to_series()
