"""IP and e-mail canonicalisation: fixed cases, and agreement with Python's ipaddress."""

from __future__ import annotations

import ipaddress

import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from distill_forensics.normalize import (
    FREE_MAIL_DOMAINS,
    _canonical_v6,
    _ip_series,
    _ip_series_general,
    _network_v6,
    email_domain,
    email_normalized,
    ip_clean,
    ip_network,
    is_free_mail,
)


def apply(fn, values: list[str | None]) -> list[str | None]:
    frame = pl.DataFrame({"v": values}, schema={"v": pl.String})
    return frame.select(fn(pl.col("v"))).to_series().to_list()


def reference_clean(text: str) -> str | None:
    """What ip_clean should give, straight from ipaddress."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Address(int(address)))
    return str(address)


def reference_network(text: str) -> str | None:
    clean = reference_clean(text)
    if clean is None:
        return None
    prefix = 24 if ":" not in clean else 48
    return str(ipaddress.ip_network(f"{clean}/{prefix}", strict=False))


@pytest.mark.parametrize(
    ("raw", "clean", "network"),
    [
        ("1.2.3.4", "1.2.3.4", "1.2.3.0/24"),
        ("  10.0.0.255 ", "10.0.0.255", "10.0.0.0/24"),
        ("255.255.255.255", "255.255.255.255", "255.255.255.0/24"),
        ("0.0.0.0", "0.0.0.0", "0.0.0.0/24"),
        ("01.2.3.4", None, None),  # leading zero: octal in some parsers, so rejected
        ("256.1.1.1", None, None),
        ("1.2.3", None, None),
        ("1.2.3.4.5", None, None),
        ("1.2.3.4/24", None, None),
        ("١.٢.٣.٤", None, None),  # non-ASCII digits
        ("::ffff:1.2.3.4", "1.2.3.4", "1.2.3.0/24"),
        ("::FFFF:0102:0304", "1.2.3.4", "1.2.3.0/24"),
        ("2001:DB8::1", "2001:db8::1", "2001:db8::/48"),
        ("2001:db8:abcd:12::1", "2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1", "2001:db8::/48"),
        ("fe80::1%eth0", "fe80::1", "fe80::/48"),
        ("::", "::", "::/48"),
        ("2001:db8::1::2", None, None),
        ("garbage", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_ip_fixed_cases(raw: str | None, clean: str | None, network: str | None) -> None:
    assert apply(ip_clean, [raw]) == [clean]
    assert apply(ip_network, [raw]) == [network]


def test_ip_works_lazily_and_on_empty_input() -> None:
    lf = pl.LazyFrame({"ip": ["1.2.3.4", "2001:db8::1", None] * 1000})
    out = lf.select(ip_network(pl.col("ip"))).unique().collect(engine="streaming")
    assert set(out.to_series().to_list()) == {None, "1.2.3.0/24", "2001:db8::/48"}
    assert apply(ip_clean, []) == []


ip_texts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=6).map(lambda a: a.exploded.upper()),
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
    st.ip_addresses(v=4).map(lambda a: f" {a}\t"),
)


@given(st.lists(ip_texts, max_size=20))
def test_ip_agrees_with_ipaddress_on_addresses(texts: list[str]) -> None:
    assert apply(ip_clean, texts) == [reference_clean(t) for t in texts]
    assert apply(ip_network, texts) == [reference_network(t) for t in texts]


@given(st.lists(st.text(alphabet="0123456789abcdefABCDEF:.", max_size=42), max_size=20))
def test_ip_agrees_with_ipaddress_on_noise(texts: list[str]) -> None:
    assert apply(ip_clean, texts) == [reference_clean(t) for t in texts]


@pytest.mark.parametrize(
    ("raw", "normalized", "domain"),
    [
        ("Jane.Doe+shop@GoogleMail.com", "janedoe@gmail.com", "gmail.com"),
        ("j.a.n.e@gmail.com", "jane@gmail.com", "gmail.com"),
        ("Jane.Doe+x@Example.COM", "jane.doe@example.com", "example.com"),
        ("  bob@corp.io. ", "bob@corp.io", "corp.io"),
        ("+tag@gmail.com", None, "gmail.com"),
        ("no-at-sign", None, None),
        ("a@b@c.com", None, None),
        ("@x.com", None, None),
        (None, None, None),
    ],
)
def test_email(raw: str | None, normalized: str | None, domain: str | None) -> None:
    assert apply(email_normalized, [raw]) == [normalized]
    assert apply(email_domain, [raw]) == [domain]


@pytest.mark.parametrize(
    ("text", "free"),
    [
        ("x@gmail.com", True),
        ("x@proton.me", True),
        ("x@yahoo.co.uk", True),
        ("x@gmx.de", True),
        ("x@yandex.kz", True),
        ("x@qq.com", True),
        ("x@163.com", True),
        ("x@corp.example", False),
        ("GMAIL.COM", True),  # a bare domain
        ("example.com", False),
        (None, None),
    ],
)
def test_is_free_mail(text: str | None, free: bool | None) -> None:
    assert apply(is_free_mail, [text]) == [free]


@given(
    st.lists(
        st.one_of(
            st.none(),
            st.sampled_from(["Jane.Doe+shop@GoogleMail.com", "x@yahoo.co.uk", "GMAIL.COM"]),
            st.text(alphabet="aB.+@ x9", max_size=12),
        ),
        max_size=30,
    )
)
def test_email_columns_agree_with_one_address_at_a_time(texts: list[str | None]) -> None:
    # The functions work column by column; rows must not leak into each other,
    # and each row gets what the rules, written as one plain expression, give.
    for func in (email_normalized, email_domain, is_free_mail):
        assert apply(func, texts) == [apply(func, [t])[0] for t in texts]
    assert apply(email_normalized, texts) == apply(_reference_normalized, texts)
    assert apply(is_free_mail, texts) == apply(_reference_free_mail, texts)


def _reference_parts(expr: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    text = expr.cast(pl.String).str.strip_chars().str.to_lowercase()
    pattern = r"^([^\s@]+)@([^\s@]+?)\.?$"
    domain = text.str.extract(pattern, 2)
    domain = pl.when(domain == "googlemail.com").then(pl.lit("gmail.com")).otherwise(domain)
    return text.str.extract(pattern, 1), domain


def _reference_normalized(expr: pl.Expr) -> pl.Expr:
    local, domain = _reference_parts(expr)
    local = local.str.replace(r"\+.*$", "")
    local = (
        pl.when(domain.is_in(["gmail.com", "googlemail.com"]))
        .then(local.str.replace_all(".", "", literal=True))
        .otherwise(local)
    )
    return pl.when(local != "").then(pl.concat_str(local, pl.lit("@"), domain))


def _reference_free_mail(expr: pl.Expr) -> pl.Expr:
    text = expr.cast(pl.String).str.strip_chars().str.to_lowercase()
    domain = (
        pl.when(text.str.contains("@", literal=True))
        .then(_reference_parts(text)[1])
        .otherwise(text.str.strip_chars_end("."))
    )
    families = r"^(?:gmx|yandex|yahoo|hotmail|outlook)\.(?:[a-z]{2,3}|co\.[a-z]{2}|com\.[a-z]{2})$"
    return domain.is_in(FREE_MAIL_DOMAINS) | domain.str.contains(families)


def test_free_mail_domains_are_lowercase_domains() -> None:
    assert all(d == d.lower() and "." in d and "@" not in d for d in FREE_MAIL_DOMAINS)


_PADS = st.sampled_from(["", " ", "\t\n", "\x0b\x0c\r", "\x1c", "\xa0", "."])
_IP_NOISE = st.one_of(
    st.text(alphabet="0123456789.:af \t\n\x0b\x0c\r\x1c\xa0١", max_size=24),
    st.builds(
        lambda before, octets, after: before + ".".join(octets) + after,
        _PADS,
        st.lists(
            st.sampled_from(["0", "7", "25", "199", "255", "00", "07", "256", "1000", ""]),
            min_size=3,
            max_size=5,
        ),
        _PADS,
    ),
    # IPv6: hextets of up to five hex digits, some empty (a "::"), padding, zones.
    st.builds(
        lambda before, head, hextets, after: before + head + ":".join(hextets) + after,
        _PADS,
        st.sampled_from(["", ":", "::", "::ffff:", "0:0:0:0:0:FFFF:"]),
        st.lists(
            st.one_of(
                st.sampled_from(["", "0", "00", "0000", "ffff", "FFFF", "1.2.3.4"]),
                st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=5),
            ),
            max_size=10,
        ),
        st.sampled_from(["", ":", "::", "%eth0", "%", "/64", "g"]),
    ),
    st.text(alphabet="0123456789aAfF:.% \t", max_size=24),
)


@example(
    [
        "0:0:1:0:0:2:0:0",
        "1:0:0:2:0:0:0:3",
        "::ffff:102:304",
        "1:2:3:4:5:6:7::",
        "1:2:3:4:5:6:7:8:9",
        ":1:2::3",
        "00000::1",
        "::",
    ]
)
@example(["\x1c1.2.3.4", "1.2.3.4.", "1.2.3.4.5", "\xa01.2.3.4", "\t1.2.3.4\x0b", "1..2.3"])
@settings(max_examples=300)
@given(st.lists(st.one_of(st.none(), _IP_NOISE), max_size=30))
def test_ip_compiled_pass_agrees_with_the_general_path(texts: list[str | None]) -> None:
    """The compiled pass gives what the regular expressions and ipaddress give."""
    values = pl.Series("v", texts, dtype=pl.String)
    for v6, network in ((_canonical_v6, False), (_network_v6, True)):
        expected = _ip_series_general(values, v6, network=network).to_list()
        assert _ip_series(values, v6, network=network).to_list() == expected
