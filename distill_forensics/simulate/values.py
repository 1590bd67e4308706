"""Vocabularies and vectorised builders for identity values: names, emails, IPs, cards, clients.

Everything here is a pure function of its numpy Generator and arguments, and returns
numpy arrays or polars Series so callers never loop per account or per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import polars as pl

# --------------------------------------------------------------------------- helpers

_HEX = np.frombuffer(b"0123456789abcdef", dtype="S1")


def split_words(text: str) -> tuple[str, ...]:
    """A vocabulary written as one space-separated string (keeps long word lists compact)."""
    return tuple(text.split())


def pick(
    rng: np.random.Generator,
    vocab: Sequence[str] | pl.Series,
    n: int,
    p: Sequence[float] | np.ndarray | None = None,
) -> pl.Series:
    """Draw ``n`` values from ``vocab`` (uniform, or with weights ``p``)."""
    series = vocab if isinstance(vocab, pl.Series) else pl.Series(list(vocab), dtype=pl.String)
    if p is None:
        idx = rng.integers(0, len(series), n)
    else:
        w = np.asarray(p, dtype=float)
        idx = rng.choice(len(series), size=n, p=w / w.sum())
    return series.gather(idx)


def hex_strings(values: np.ndarray, width: int) -> np.ndarray:
    """Fixed-width lower-case hex text of unsigned integers (numpy unicode array)."""
    v = values.astype(np.uint64)
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64) * np.uint64(4)
    digits = ((v[:, None] >> shifts[None, :]) & np.uint64(15)).astype(np.intp)
    chars = np.ascontiguousarray(_HEX[digits])
    return chars.view(f"S{width}").ravel().astype(f"U{width}")


def random_hex(rng: np.random.Generator, n: int, width: int) -> pl.Series:
    """``n`` random hex strings of ``width`` digits (width <= 16)."""
    bits = 4 * width
    hi = np.uint64(2**bits - 1) if bits < 64 else np.iinfo(np.uint64).max
    vals = rng.integers(0, hi, n, dtype=np.uint64, endpoint=True)
    return pl.Series(hex_strings(vals, width), dtype=pl.String)


def unique_random_ints(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    """``n`` distinct random integers below 2**bits, in random order."""
    out = np.unique(rng.integers(0, 2**bits, n + n // 10 + 16, dtype=np.uint64))
    while len(out) < n:
        more = rng.integers(0, 2**bits, n, dtype=np.uint64)
        out = np.unique(np.concatenate([out, more]))
    out = out[:n] if len(out) == n else rng.choice(out, n, replace=False)
    return rng.permutation(out)


@cache
def _octets() -> pl.Series:
    return pl.Series([str(i) for i in range(256)], dtype=pl.String)


@cache
def _hex_groups() -> pl.Series:
    return pl.Series([f"{i:x}" for i in range(65536)], dtype=pl.String)


def ipv4_text(ints: np.ndarray) -> pl.Series:
    """Dotted-quad text of IPv4 addresses held as integers."""
    v = ints.astype(np.int64)
    o = _octets()
    df = pl.DataFrame(
        {
            "a": o.gather((v >> 24) & 255),
            "b": o.gather((v >> 16) & 255),
            "c": o.gather((v >> 8) & 255),
            "d": o.gather(v & 255),
        }
    )
    return df.select(pl.concat_str(["a", "b", "c", "d"], separator=".")).to_series()


def ipv4(
    a: np.ndarray | int, b: np.ndarray | int, c: np.ndarray | int, d: np.ndarray | int
) -> np.ndarray:
    """Pack octets into IPv4 integers."""
    return (
        (np.asarray(a, np.int64) << 24)
        | (np.asarray(b, np.int64) << 16)
        | (np.asarray(c, np.int64) << 8)
        | np.asarray(d, np.int64)
    )


# --------------------------------------------------------------------------- geography


@dataclass(frozen=True)
class Region:
    """A billing country with its time zone and its residential address space."""

    country: str
    tz_hours: float
    weight: float
    octets: tuple[int, ...]  # first octets of residential ISP blocks
    v6_prefix: str  # first groups of a residential IPv6 prefix


REGIONS: tuple[Region, ...] = (
    Region("US", -5, 0.10, (24, 47, 67, 68, 71, 73, 75, 96, 98), "2600:1700"),
    Region("US", -6, 0.05, (69, 70, 72, 76, 97, 99), "2601"),
    Region("US", -8, 0.08, (24, 67, 71, 73, 76, 98), "2603:8000"),
    Region("CA", -5, 0.03, (70, 184, 99), "2607:fea8"),
    Region("GB", 0, 0.06, (81, 82, 86, 92, 109), "2a00:23c7"),
    Region("DE", 1, 0.05, (77, 79, 84, 87, 91, 93), "2a02:810d"),
    Region("FR", 1, 0.04, (2, 78, 80, 83, 90), "2a01:e0a"),
    Region("NL", 1, 0.02, (62, 77, 145), "2001:1c00"),
    Region("ES", 1, 0.02, (79, 83, 88), "2a0c:5a80"),
    Region("IT", 1, 0.02, (79, 87, 93, 151), "2a01:e11"),
    Region("PL", 1, 0.02, (31, 83, 89), "2a02:a311"),
    Region("SE", 1, 0.01, (78, 81, 90), "2001:2043"),
    Region("IN", 5.5, 0.10, (49, 106, 117, 122, 182), "2405:201"),
    Region("BR", -3, 0.05, (177, 179, 187, 189, 191, 201), "2804:14c"),
    Region("MX", -6, 0.02, (187, 189, 201), "2806:10ae"),
    Region("JP", 9, 0.04, (1, 60, 106, 114, 126, 153), "2400:4050"),
    Region("KR", 9, 0.03, (1, 59, 121, 175, 211), "2001:2d8"),
    Region("SG", 8, 0.02, (42, 116, 118), "2406:3003"),
    Region("AU", 10, 0.03, (1, 49, 58, 101, 110, 120), "2001:8003"),
    Region("ID", 7, 0.03, (36, 110, 114, 180), "2001:448a"),
    Region("VN", 7, 0.02, (14, 113, 171), "2402:800"),
    Region("NG", 1, 0.02, (41, 102, 105, 197), "2c0f:f5c0"),
    Region("ZA", 2, 0.01, (41, 102, 105, 196), "2c0f:f4c0"),
    Region("TR", 3, 0.02, (78, 85, 88, 95), "2a02:ff0"),
    Region("IL", 2, 0.01, (46, 79, 84, 109), "2a06:c701"),
    Region("AR", -3, 0.01, (181, 186, 190), "2800:810"),
    Region("PH", 8, 0.02, (49, 112, 119, 124), "2001:4452"),
    Region("EG", 2, 0.01, (41, 156, 197), "2c0f:fc89"),
    Region("UA", 2, 0.01, (31, 46, 91, 93), "2a02:2378"),
)
REGION_WEIGHTS = np.array([r.weight for r in REGIONS]) / sum(r.weight for r in REGIONS)
REGION_TZ_SECONDS = np.array([int(r.tz_hours * 3600) for r in REGIONS], dtype=np.int64)
REGION_COUNTRY = pl.Series([r.country for r in REGIONS], dtype=pl.String)


def pick_regions(rng: np.random.Generator, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Region indices for ``n`` people, by population weight unless ``weights`` is given."""
    w = REGION_WEIGHTS if weights is None else weights / weights.sum()
    return rng.choice(len(REGIONS), size=n, p=w)


def residential_ipv4(rng: np.random.Generator, regions: np.ndarray) -> np.ndarray:
    """A home broadband IPv4 address in each given region's ISP space."""
    n = len(regions)
    counts = np.array([len(r.octets) for r in REGIONS])
    table = np.zeros((len(REGIONS), counts.max()), dtype=np.int64)
    for i, r in enumerate(REGIONS):
        table[i, : len(r.octets)] = r.octets
    col = (rng.random(n) * counts[regions]).astype(np.int64)
    a = table[regions, col]
    return ipv4(a, rng.integers(0, 256, n), rng.integers(0, 256, n), rng.integers(1, 255, n))


def residential_ipv6(rng: np.random.Generator, regions: np.ndarray) -> pl.Series:
    """A home IPv6 address (full eight groups, lower-case, no zero compression)."""
    n = len(regions)
    prefixes = pl.Series([r.v6_prefix for r in REGIONS], dtype=pl.String).gather(regions)
    groups = _hex_groups()
    n_prefix = np.array([r.v6_prefix.count(":") + 1 for r in REGIONS])[regions]
    cols: dict[str, pl.Series] = {"p": prefixes}
    # Fill to eight groups: the prefix holds one or two of them.
    for k in range(7):
        g = groups.gather(rng.integers(0, 65536, n))
        cols[f"g{k}"] = pl.Series(k < (8 - n_prefix))
        cols[f"v{k}"] = g
    df = pl.DataFrame(cols)
    parts = [pl.col("p")]
    for k in range(7):
        parts.append(
            pl.when(pl.col(f"g{k}")).then(pl.lit(":") + pl.col(f"v{k}")).otherwise(pl.lit(""))
        )
    return df.select(pl.concat_str(parts)).to_series()


@dataclass(frozen=True)
class Provider:
    """A hosting provider and the /16 blocks its customers' addresses come from."""

    name: str
    blocks: tuple[tuple[int, int], ...]


PROVIDERS: tuple[Provider, ...] = (
    Provider("aws", ((3, 80), (3, 91), (18, 204), (34, 201), (44, 192), (52, 20), (54, 160))),
    Provider("gcp", ((34, 70), (34, 118), (35, 188), (35, 230), (104, 196), (104, 198))),
    Provider("azure", ((20, 42), (20, 106), (40, 76), (13, 68), (52, 232), (4, 152))),
    Provider(
        "digitalocean",
        (
            (137, 184),
            (138, 68),
            (139, 59),
            (143, 110),
            (157, 230),
            (159, 65),
            (161, 35),
            (164, 90),
            (165, 22),
            (167, 71),
            (167, 99),
            (188, 166),
        ),
    ),
    Provider(
        "hetzner",
        (
            (5, 161),
            (49, 12),
            (78, 46),
            (88, 198),
            (95, 216),
            (116, 202),
            (135, 181),
            (138, 201),
            (142, 132),
            (157, 90),
            (159, 69),
            (167, 235),
            (188, 34),
        ),
    ),
    Provider(
        "ovh",
        (
            (51, 38),
            (51, 68),
            (51, 75),
            (51, 89),
            (51, 161),
            (54, 37),
            (91, 121),
            (137, 74),
            (141, 94),
            (145, 239),
            (147, 135),
            (149, 202),
            (151, 80),
            (164, 132),
            (176, 31),
        ),
    ),
    Provider(
        "linode",
        (
            (45, 33),
            (45, 56),
            (45, 79),
            (50, 116),
            (66, 175),
            (69, 164),
            (139, 162),
            (172, 104),
            (173, 255),
            (178, 79),
        ),
    ),
    Provider(
        "vultr",
        (
            (45, 32),
            (45, 63),
            (45, 76),
            (45, 77),
            (66, 42),
            (104, 156),
            (108, 61),
            (140, 82),
            (144, 202),
            (149, 28),
            (155, 138),
            (207, 148),
        ),
    ),
)
PROVIDER_INDEX = {p.name: i for i, p in enumerate(PROVIDERS)}


def cloud_subnets(
    rng: np.random.Generator, n: int, providers: Sequence[str] | None = None
) -> np.ndarray:
    """Base addresses (x.y.z.0) of ``n`` random /24s inside hosting providers' space."""
    names = list(providers) if providers else [p.name for p in PROVIDERS]
    blocks = [b for name in names for b in PROVIDERS[PROVIDER_INDEX[name]].blocks]
    arr = np.array(blocks, dtype=np.int64)
    pick_b = rng.integers(0, len(arr), n)
    return ipv4(arr[pick_b, 0], arr[pick_b, 1], rng.integers(0, 256, n), 0)


@dataclass(frozen=True)
class Carrier:
    """A mobile carrier whose subscribers share a few CGNAT egress pools."""

    name: str
    region: int
    blocks: tuple[tuple[int, int], ...]


def _region(country: str, tz: float) -> int:
    return next(i for i, r in enumerate(REGIONS) if r.country == country and r.tz_hours == tz)


CARRIERS: tuple[Carrier, ...] = (
    Carrier("tmobile-us", _region("US", -5), ((172, 56), (172, 58), (172, 59), (172, 62))),
    Carrier("verizon-us", _region("US", -8), ((174, 193), (174, 205), (174, 224), (174, 250))),
    Carrier("att-us", _region("US", -6), ((107, 77), (107, 115), (166, 137), (166, 205))),
    Carrier("jio-in", _region("IN", 5.5), ((49, 36), (49, 44), (157, 32), (157, 48))),
    Carrier("vodafone-de", _region("DE", 1), ((109, 40), (109, 43), (94, 134))),
    Carrier("claro-br", _region("BR", -3), ((177, 79), (191, 176), (179, 240))),
    Carrier("globe-ph", _region("PH", 8), ((112, 198), (112, 203), (124, 106))),
)


# --------------------------------------------------------------------------- people

FIRST_NAMES: tuple[str, ...] = split_words(
    "james mary john linda robert sarah michael emily david anna william laura daniel "
    "sofia matthew olivia joseph emma chris hannah andrew grace ryan chloe kevin julia "
    "brian nina eric lucy jason maria adam elena mark clara paul irene peter alice thomas "
    "jessica lukas lea felix marie jonas mia leon lena pierre camille louis manon hugo "
    "ines marco giulia luca chiara pablo lucia javier carmen diego valentina mateo camila "
    "rahul priya amit ananya arjun divya vikram sneha rohan pooja karthik lakshmi wei li "
    "jun xin hao mei yuki haruto sakura ren aoi minjun jiwoo seoyeon hyun ahmed fatima "
    "omar aisha yusuf leila chinedu ngozi kwame amara tunde zainab ivan olga dmitri "
    "anastasia piotr agnieszka jan eva lars ingrid erik sven noah liam ava ethan isabella "
    "lucas zoe owen nora caleb tomas joao beatriz rafael gabriel larissa thiago bruna "
    "nguyen linh minh ali mehmet elif can zeynep yosef noa tamar avi"
)
LAST_NAMES: tuple[str, ...] = split_words(
    "smith johnson williams brown jones garcia miller davis martinez lopez wilson "
    "anderson taylor thomas moore jackson martin lee thompson white harris clark lewis "
    "walker hall young king wright scott green baker adams nelson hill campbell mitchell "
    "roberts carter phillips evans turner parker collins edwards stewart morris murphy "
    "cook rogers morgan cooper peterson reed bailey kelly howard cox ward richardson "
    "watson brooks wood mueller schmidt schneider fischer weber meyer wagner becker "
    "hoffmann schulz dubois durand lefebvre moreau laurent simon michel rossi russo "
    "ferrari esposito bianchi romano colombo fernandez gonzalez rodriguez sanchez perez "
    "gomez diaz alvarez silva santos oliveira souza pereira costa ferreira almeida sharma "
    "patel singh kumar gupta reddy iyer nair rao das wang zhang liu chen yang huang zhao "
    "wu zhou xu tanaka suzuki takahashi watanabe ito yamamoto nakamura kim park choi jung "
    "kang cho yoon nguyen tran pham hoang okafor adeyemi mensah okeke ibrahim hassan ali "
    "khan yilmaz kaya demir kowalski nowak wisniewski novak svoboda andersson johansson "
    "nilsson larsen hansen jensen ivanov petrov smirnov cohen levi"
)

FREEMAIL: tuple[tuple[str, float], ...] = (
    ("gmail.com", 0.45),
    ("outlook.com", 0.10),
    ("yahoo.com", 0.07),
    ("hotmail.com", 0.06),
    ("icloud.com", 0.06),
    ("proton.me", 0.04),
    ("protonmail.com", 0.02),
    ("gmx.de", 0.02),
    ("web.de", 0.02),
    ("mail.ru", 0.015),
    ("qq.com", 0.02),
    ("163.com", 0.015),
    ("yandex.ru", 0.01),
    ("aol.com", 0.01),
    ("zoho.com", 0.01),
    ("naver.com", 0.02),
    ("yahoo.co.jp", 0.01),
    ("orange.fr", 0.01),
    ("libero.it", 0.01),
    ("fastmail.com", 0.01),
)
FREEMAIL_DOMAINS = pl.Series([d for d, _ in FREEMAIL], dtype=pl.String)
FREEMAIL_WEIGHTS = np.array([w for _, w in FREEMAIL]) / sum(w for _, w in FREEMAIL)
PLUS_TAGS: tuple[str, ...] = split_words("ai api dev work test llm openai code 2 alt news main")


def person_locals(
    rng: np.random.Generator,
    n: int,
    last: pl.Series | None = None,
    styles: Sequence[float] = (0.22, 0.14, 0.12, 0.12, 0.12, 0.10, 0.10, 0.08),
) -> pl.Series:
    """Mailbox names people pick: john.smith, jsmith84, smith_john, ...

    ``last`` fixes the surname per row (families); ``styles`` weights the eight patterns.
    """
    first = pick(rng, FIRST_NAMES, n)
    last = pick(rng, LAST_NAMES, n) if last is None else last
    num2 = pl.Series(rng.integers(1, 100, n)).cast(pl.String).str.zfill(2)
    num4 = pl.Series(rng.integers(1950, 2010, n)).cast(pl.String)
    numl = pl.Series(rng.integers(1, 100_000, n)).cast(pl.String)
    w = np.asarray(styles, dtype=float)
    style = rng.choice(8, size=n, p=w / w.sum())
    df = pl.DataFrame({"f": first, "l": last, "n2": num2, "n4": num4, "nl": numl, "s": style})
    s = pl.col("s")
    f, l_ = pl.col("f"), pl.col("l")
    return df.select(
        pl.when(s == 0)
        .then(pl.concat_str([f, pl.lit("."), l_]))
        .when(s == 1)
        .then(pl.concat_str([f, l_]))
        .when(s == 2)
        .then(pl.concat_str([f.str.head(1), l_, pl.col("n2")]))
        .when(s == 3)
        .then(pl.concat_str([f, pl.lit("."), l_, pl.col("n2")]))
        .when(s == 4)
        .then(pl.concat_str([f, l_, pl.col("n4")]))
        .when(s == 5)
        .then(pl.concat_str([l_, pl.lit("_"), f]))
        .when(s == 6)
        .then(pl.concat_str([f, pl.lit("_"), l_.str.head(1), pl.col("nl")]))
        .otherwise(pl.concat_str([f, pl.col("nl")]))
    ).to_series()


def freemail_emails(
    rng: np.random.Generator, n: int, plus_share: float = 0.04, locals_: pl.Series | None = None
) -> pl.Series:
    """Free-mail addresses; a few use a ``+tag``; gmail users sometimes add dots."""
    local = person_locals(rng, n) if locals_ is None else locals_
    domain = FREEMAIL_DOMAINS.gather(rng.choice(len(FREEMAIL_DOMAINS), n, p=FREEMAIL_WEIGHTS))
    tag = pick(rng, PLUS_TAGS, n)
    use_tag = pl.Series(rng.random(n) < plus_share)
    df = pl.DataFrame({"l": local, "d": domain, "t": tag, "u": use_tag})
    return df.select(
        pl.concat_str(
            [
                pl.col("l"),
                pl.when(pl.col("u")).then(pl.lit("+") + pl.col("t")).otherwise(pl.lit("")),
                pl.lit("@"),
                pl.col("d"),
            ]
        )
    ).to_series()


def make_unique(rng: np.random.Generator, emails: pl.Series) -> pl.Series:
    """Give duplicated addresses a numeric suffix until every address is unique."""
    s = emails
    for _ in range(20):
        dup = s.is_duplicated() & ~s.is_first_distinct()
        if not dup.any():
            return s
        parts = s.str.split_exact("@", 1).struct.unnest()
        suffix = pl.Series(rng.integers(1, 10_000, len(s))).cast(pl.String)
        fixed = (
            pl.DataFrame({"a": parts["field_0"], "b": parts["field_1"], "x": suffix})
            .select(pl.concat_str([pl.col("a"), pl.col("x"), pl.lit("@"), pl.col("b")]))
            .to_series()
        )
        s = pl.select(pl.when(dup).then(fixed).otherwise(s)).to_series()
    return s


DOMAIN_HEADS: tuple[str, ...] = split_words(
    "blue north bright iron silver green quantum delta apex nova river cedar summit "
    "harbor pixel vector cobalt lumen atlas orbit maple granite swift crimson solar echo "
    "prism aurora falcon pioneer zenith coral amber onyx tidal crest arc vivid polar sage"
)
DOMAIN_TAILS: tuple[str, ...] = split_words(
    "labs works soft data logic systems health finance bank retail media analytics cloud "
    "robotics legal insure motors foods energy bio learning games security logistics "
    "travel studio ventures networks pay ai"
)
DOMAIN_TLDS: tuple[str, ...] = ("com", "io", "ai", "co", "de", "co.uk", "net", "fr", "in", "dev")
CAMPUS_NAMES: tuple[str, ...] = split_words(
    "northfield lakeshore stmarys riverdale-tech westbrook easton-state pinecrest "
    "hillsdale bayview greenmont kingsford oakridge redstone fairhaven millbrook "
    "clearwater"
)


def org_domains(rng: np.random.Generator, n: int) -> pl.Series:
    """Company-like domains such as ``cobaltanalytics.io``; unique within the call."""
    heads = pick(rng, DOMAIN_HEADS, n)
    tails = pick(rng, DOMAIN_TAILS, n)
    tlds = pick(rng, DOMAIN_TLDS, n, p=[0.4, 0.15, 0.1, 0.08, 0.06, 0.06, 0.05, 0.04, 0.03, 0.03])
    sep = pick(rng, ["", "-"], n, p=[0.8, 0.2])
    out = (
        pl.DataFrame({"h": heads, "s": sep, "t": tails, "d": tlds})
        .select(pl.concat_str([pl.col("h"), pl.col("s"), pl.col("t"), pl.lit("."), pl.col("d")]))
        .to_series()
    )
    first = out.is_first_distinct()
    num = pl.Series(rng.integers(2, 99, n)).cast(pl.String)
    return pl.select(
        pl.when(first).then(out).otherwise(pl.concat_str([heads, num, tails, pl.lit("."), tlds]))
    ).to_series()


# --------------------------------------------------------------------------- cards

#: One prepaid card BIN used by the residential-proxy campaign and by a few ordinary users.
PREPAID_BIN = "489514"


@cache
def card_bins() -> tuple[pl.Series, np.ndarray]:
    """A fixed table of issuer BINs with Zipf-like popularity (big banks issue most cards)."""
    rng = np.random.default_rng(4_111_111)
    visa = rng.integers(400_000, 499_999, 220)
    mc = rng.integers(510_000, 559_999, 140)
    mc2 = rng.integers(222_100, 272_099, 30)
    amex = np.concatenate([rng.integers(340_000, 349_999, 10), rng.integers(370_000, 379_999, 10)])
    bins = np.unique(np.concatenate([visa, mc, mc2, amex]))
    bins = bins[bins != int(PREPAID_BIN)]
    bins = rng.permutation(bins)
    weights = 1.0 / np.arange(1, len(bins) + 1) ** 0.9
    return pl.Series(bins.astype(str), dtype=pl.String), weights / weights.sum()


def draw_bins(rng: np.random.Generator, n: int) -> pl.Series:
    """Issuer BINs of ``n`` ordinary cards."""
    bins, w = card_bins()
    return bins.gather(rng.choice(len(bins), n, p=w))


# --------------------------------------------------------------------------- clients


@dataclass(frozen=True)
class Client:
    """A user-agent string with the TLS fingerprint its HTTP stack presents."""

    ua: str
    tls: str
    family: str


TLS_CHROME = "t13d1516h2_8daaf6152771_02713d6af862"
TLS_FIREFOX = "t13d1715h2_5b57614c22b0_5c2c66f702b0"
TLS_SAFARI = "t13d2014h2_a09f3c656075_14788d8d241b"
TLS_ANDROID = "t13d1516h2_8daaf6152771_b0da82dd1658"
TLS_PY = "t13d1812h2_85036bcba153_375ca2c5e164"
TLS_PY_H1 = "t13d1812h1_85036bcba153_b26ce05bbdd6"
TLS_PY_OLD = "t13d1811h2_85036bcba153_9f3a6b21c7e0"
TLS_NODE = "t13d1713h2_5b57614c22b0_3d5424432f57"
TLS_GO = "t13d1311h2_f57a46bbacb6_ab7e3b40a677"
TLS_JAVA = "t13d1211h2_d34a8e72043a_4c8b1b2d9fa1"
TLS_CURL = "t13d3112h2_e8f1e7e78f70_6bebaf5329ac"
TLS_AIOHTTP = "t13d1813h1_85036bcba153_d41ae481755e"

_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36"
)
_CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36"
)
_FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0"
_SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/{v} Safari/605.1.15"
)
_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS {v} like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Mobile Safari/537.36"
)


@cache
def common_clients() -> tuple[Client, ...]:
    """The everyday clients: current browsers and the popular SDKs."""
    out: list[Client] = []
    for v in range(130, 136):
        out.append(Client(_CHROME.format(v=v), TLS_CHROME, "desktop"))
        out.append(Client(_CHROME_MAC.format(v=v), TLS_CHROME, "desktop"))
        out.append(Client(_ANDROID.format(v=v), TLS_ANDROID, "mobile"))
    for v in range(131, 136):
        out.append(Client(_FIREFOX.format(v=v), TLS_FIREFOX, "desktop"))
    for ver in ("17.6", "18.1", "18.2", "18.3"):
        out.append(Client(_SAFARI.format(v=ver), TLS_SAFARI, "desktop"))
    for ver in ("17_6", "18_1", "18_2", "18_3"):
        out.append(Client(_IPHONE.format(v=ver), TLS_SAFARI, "mobile"))
    for minor in range(54, 66, 2):
        out.append(Client(f"openai-python/1.{minor}.0", TLS_PY, "sdk"))
    for ver in ("0.27.0", "0.27.2", "0.28.1"):
        out.append(Client(f"python-httpx/{ver}", TLS_PY, "sdk"))
    out.append(Client("python-requests/2.32.3", TLS_PY_H1, "sdk"))
    out.append(Client("node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", TLS_NODE, "sdk"))
    for ver in ("4.77.0", "4.80.1", "4.85.4"):
        out.append(Client(f"openai-node/{ver}", TLS_NODE, "sdk"))
    out.append(Client("axios/1.7.9", TLS_NODE, "sdk"))
    out.append(Client("Go-http-client/2.0", TLS_GO, "sdk"))
    out.append(Client("curl/8.5.0", TLS_CURL, "sdk"))
    out.append(Client("okhttp/4.12.0", TLS_JAVA, "sdk"))
    return tuple(out)


#: Older or niche tooling: a little benign use, and the base of some campaigns' clients.
NICHE_CLIENTS: tuple[Client, ...] = (
    Client("python-httpx/0.24.1", TLS_PY_OLD, "niche"),
    Client("aiohttp/3.8.5 Python/3.10", TLS_AIOHTTP, "niche"),
    Client("python-requests/2.28.2", TLS_PY_H1, "niche"),
)

#: A spoofed browser string over a scripting TLS stack: rare, shared by the residential-proxy
#: campaign and a handful of ordinary users of the same scraping toolkit.
RARE_CLIENT = Client(
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/109.0.0.0 Safari/537.36 Edg/109.0.1518.70",
    "t13d1910h1_c9eaec7dbab4_7ee1a3b9d5f3",
    "rare",
)


def internal_client(name: str, version: str) -> Client:
    """A company's in-house gateway client (Go or Java HTTP stack)."""
    tls = TLS_GO if len(name) % 2 == 0 else TLS_JAVA
    return Client(f"{name}-llm-gateway/{version}", tls, "internal")
