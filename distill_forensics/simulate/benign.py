"""Benign populations: ordinary users and organisations whose traffic looks linked.

Each builder returns a :class:`~distill_forensics.simulate.world.Part`. They share
infrastructure the way real users do (carrier NAT, campus NAT, CI egress, proxy exits,
corporate cards), which is what makes naive IP/card linking fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from distill_forensics.simulate import prompts, values
from distill_forensics.simulate.config import (
    ATTACK_KINDS,
    END_US,
    RELEASE_US,
    START_US,
    US_PER_DAY,
    US_PER_HOUR,
    US_PER_SECOND,
    WINDOW_DAYS,
    WINDOW_START_WEEKDAY,
    Scale,
)
from distill_forensics.simulate.timing import (
    HOURS,
    N_LOCAL_DAYS,
    day_weights,
    local_times,
    split_sessions,
    within_sessions,
)
from distill_forensics.simulate.world import (
    Kind,
    Part,
    World,
    account_frame,
    adoption,
    choose_models,
    group_ids,
    lognormal_counts,
    make_part,
    per_account_choice,
    per_request_choice,
    pick_per_request,
    tokens,
)

#: Everyday prompt kinds; populations append their own templated kinds after these.
BASE_KINDS: list[Kind] = [
    (prompts.CHAT, "chat"),
    (prompts.CODE, "code"),
    (prompts.REASON, "reason"),
    (prompts.AGENTIC, "agentic"),
]
K_CHAT, K_CODE, K_REASON, K_AGENTIC = range(4)

#: Shares of all accounts per benign population; individuals take the remainder.
SHARES = {
    "company": 0.10,
    "university": 0.06,
    "cgnat": 0.07,
    "ci_benchmark": 0.015,
    "family": 0.04,
    "heavy_app": 0.002,
    "reseller": 0.015,
}


def benign_sizes(scale: Scale) -> dict[str, int]:
    """Accounts per benign population; independent of the campaign mix."""
    attack = sum(scale.attack_size(k) for k in ATTACK_KINDS)
    sizes = {k: max(3, round(v * scale.accounts)) for k, v in SHARES.items()}
    sizes["individual"] = scale.accounts - attack - sum(sizes.values())
    return sizes


# --------------------------------------------------------------------------- helpers


def created_before(rng: np.random.Generator, n: int, mean_days: float) -> np.ndarray:
    """Sign-up instants before the window (exponential look-back)."""
    back = rng.exponential(mean_days, n) * US_PER_DAY + rng.random(n) * US_PER_DAY
    return START_US - back.astype(np.int64) - US_PER_HOUR


def created_during(rng: np.random.Generator, n: int) -> np.ndarray:
    """Sign-up instants inside the window, with a bump after the frontier-4 release."""
    bump = rng.random(n) < 0.25
    t = START_US + (rng.random(n) * (WINDOW_DAYS - 1) * US_PER_DAY).astype(np.int64)
    t_bump = RELEASE_US + (rng.exponential(1.5, n) * US_PER_DAY).astype(np.int64)
    return np.where(bump, np.minimum(t_bump, END_US - US_PER_DAY), t)


def created_mixed(rng: np.random.Generator, n: int, during: float, mean_days: float) -> np.ndarray:
    """A ``during`` share signs up in the window, the rest earlier."""
    return np.where(
        rng.random(n) < during, created_during(rng, n), created_before(rng, n, mean_days)
    )


@dataclass
class Traffic:
    """Session-structured requests: request -> account/session, session -> account."""

    req_acct: np.ndarray
    req_sess: np.ndarray
    sess_acct: np.ndarray
    sess_start: np.ndarray
    ts: np.ndarray


def sessions(
    rng: np.random.Generator,
    n_req: np.ndarray,
    tz_s: np.ndarray,
    created_us: np.ndarray,
    day_w: np.ndarray,
    hour_w: np.ndarray,
    per_session: float,
    minutes: float = 12.0,
    day_group: np.ndarray | None = None,
    hour_group: np.ndarray | None = None,
    shift_s: np.ndarray | None = None,
    sess_day_group: np.ndarray | None = None,
) -> Traffic:
    """Sessions in the accounts' local rhythms, then requests inside them.

    Per-account arrays (``tz_s``, ``created_us``, groups, shift) are indexed by account;
    ``sess_day_group`` overrides the day group per session when given.
    """
    sess_acct, req_acct, req_sess = split_sessions(rng, n_req, per_session)
    start = np.maximum(created_us, START_US)
    end = np.full(len(n_req), END_US, dtype=np.int64)
    dg = None if day_group is None else day_group[sess_acct]
    if sess_day_group is not None:
        dg = sess_day_group
    sess_start = local_times(
        rng,
        tz_s[sess_acct],
        start[sess_acct],
        end[sess_acct],
        day_w,
        hour_w,
        day_group=dg,
        hour_group=None if hour_group is None else hour_group[sess_acct],
        hour_shift_s=None if shift_s is None else shift_s[sess_acct],
    )
    ts = within_sessions(rng, sess_start, req_sess, minutes)
    keep = (ts < END_US) & (ts >= start[req_acct])
    return Traffic(req_acct[keep], req_sess[keep], sess_acct, sess_start, ts[keep])


def pick_from_rows(
    rng: np.random.Generator, table: np.ndarray, sizes: np.ndarray, row: np.ndarray
) -> np.ndarray:
    """A random element of ``table[row]`` among its first ``sizes[row]`` entries."""
    col = (rng.random(len(row)) * sizes[row]).astype(np.int64)
    return table[row, col]


def home_ips(
    world: World, rng: np.random.Generator, region: np.ndarray, v6_share: float, slots: int = 3
) -> np.ndarray:
    """``slots`` successive home addresses per account (IPv4, or IPv6 for a share)."""
    n = len(region)
    v6 = rng.random(n) < v6_share
    table = np.zeros((n, slots), dtype=np.int64)
    r4 = np.repeat(region[~v6], slots)
    table[~v6] = world.ips.add_v4(values.residential_ipv4(rng, r4)).reshape(-1, slots)
    r6 = np.repeat(region[v6], slots)
    if len(r6):
        table[v6] = world.ips.add_text(values.residential_ipv6(rng, r6)).reshape(-1, slots)
    return table


def address_changes(rng: np.random.Generator, n: int, p: tuple[float, float, float]) -> np.ndarray:
    """Instants at which a home address is reassigned (two columns, NEVER-padded)."""
    k = rng.choice(3, n, p=list(p))
    t = np.sort(START_US + (rng.random((n, 2)) * WINDOW_DAYS * US_PER_DAY).astype(np.int64), 1)
    t[k < 2, 1] = END_US + 1
    t[k < 1, 0] = END_US + 1
    return t


def home_ip_at(
    home: np.ndarray, changes: np.ndarray, acct: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """The home address an account had at instant ``t``."""
    slot = (t >= changes[acct, 0]).astype(np.int64) + (t >= changes[acct, 1])
    return home[acct, slot]


def card_for(
    world: World, rng: np.random.Generator, has_card: np.ndarray, prepaid_share: float = 0.0
) -> np.ndarray:
    """Card handles for accounts that pay (-1 for free tier)."""
    card = np.full(len(has_card), -1, dtype=np.int64)
    k = int(has_card.sum())
    bins = values.draw_bins(rng, k)
    if prepaid_share:
        prepaid = pl.Series(rng.random(k) < prepaid_share)
        bins = pl.select(
            pl.when(prepaid).then(pl.lit(values.PREPAID_BIN)).otherwise(bins)
        ).to_series()
    card[has_card] = world.cards.new(bins)
    return card


def gamma_mix(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """Row-wise Dirichlet draws for per-row concentration parameters."""
    g = rng.gamma(np.maximum(alpha, 1e-3))
    return g / g.sum(axis=1, keepdims=True)


def mobile_pool_for(world: World, rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """A CGNAT pool per account: a local carrier's when there is one."""
    carriers, _, _ = world.cgnat_pools()
    pool = rng.integers(0, len(carriers), len(region))
    region_of_pool = np.array([values.CARRIERS[c].region for c in carriers])
    for p in range(len(carriers)):
        local = np.flatnonzero(region_of_pool == region_of_pool[p])
        mine = region == region_of_pool[p]
        pool[mine] = local[rng.integers(0, len(local), int(mine.sum()))]
    return pool


def mobile_ip(world: World, rng: np.random.Generator, pool: np.ndarray) -> np.ndarray:
    """A random egress address of each given CGNAT pool."""
    _, sizes, table = world.cgnat_pools()
    return pick_from_rows(rng, table, sizes, pool)


def group_sizes(total: int, draw: np.ndarray, min_size: int = 1) -> np.ndarray:
    """Cut a stream of candidate group sizes so they add up to exactly ``total``.

    A remainder smaller than ``min_size`` joins the last group.
    """
    sizes = draw[np.cumsum(draw) <= total].astype(np.int64)
    rest = total - int(sizes.sum())
    if rest >= min_size or (rest > 0 and len(sizes) == 0):
        sizes = np.append(sizes, rest)
    elif rest > 0:
        sizes[-1] += rest
    return sizes


# --------------------------------------------------------------------------- individuals


def individuals(world: World, n: int) -> Part:
    """Hobbyists, freelancers and developers on their own accounts and home connections."""
    rng = world.rng("individual")
    vol = world.scale.volume
    region = values.pick_regions(rng, n)
    tz = values.REGION_TZ_SECONDS[region]
    created = created_mixed(rng, n, during=0.15, mean_days=240)
    email = values.make_unique(rng, values.freemail_emails(rng, n, plus_share=0.05))
    card = card_for(world, rng, rng.random(n) < 0.6, prepaid_share=0.008)
    home = home_ips(world, rng, region, v6_share=0.14)
    changes = address_changes(rng, n, (0.72, 0.22, 0.06))
    old_ip = world.ips.add_v4(values.residential_ipv4(rng, region))
    signup = np.where((created < START_US) & (rng.random(n) < 0.6), old_ip, home[:, 0])

    # Personas: casual users, coders (some running agents), reasoners.
    persona = rng.choice(3, n, p=[0.6, 0.27, 0.13])
    alpha_kind = np.array([[8, 1.5, 1.5, 0.05], [2, 8, 1, 0.6], [2, 1, 8, 0.05]])[persona]
    kind_p = gamma_mix(rng, alpha_kind)
    alpha_model = np.array([[6, 3, 1], [5, 1.5, 3], [2, 1, 6]])[persona]
    mix = gamma_mix(rng, alpha_model)
    adopt, share = adoption(rng, n, early=0.05, gradual=0.45)

    fams = [
        {"desktop": 0.55, "mobile": 0.3, "sdk": 0.15},
        {"desktop": 0.3, "mobile": 0.05, "sdk": 0.65},
        {"desktop": 0.55, "mobile": 0.2, "sdk": 0.25},
    ]
    clients = np.zeros((n, 2), dtype=np.int64)
    for p, fam in enumerate(fams):
        opts, w = world.clients_of(fam)
        mine = persona == p
        clients[mine] = per_account_choice(rng, int(mine.sum()), opts, w)
    niche = rng.random(n) < 0.03
    clients[niche, 0] = world.niche[rng.integers(0, len(world.niche), int(niche.sum()))]
    # A handful of people use the same scraping toolkit as the residential-proxy campaign.
    n_rare = max(3, round(n * 0.0008))
    clients[rng.choice(n, n_rare, replace=False), 0] = world.rare

    n_req = lognormal_counts(rng, n, 12 * vol, 1.3, hi=int(4000 * vol) + 50)
    n_req = np.where(persona == 1, (n_req * 1.5).astype(np.int64), n_req)
    shift = (rng.normal(0, 1.5, n) * 3600).astype(np.int64)
    t = sessions(
        rng,
        n_req,
        tz,
        created,
        day_weights(1.15)[None, :],
        HOURS["evening"][None, :],
        per_session=6,
        shift_s=shift,
    )

    # Where each session comes from: home, the phone's carrier NAT, or a proxy service.
    mobile = rng.random(n) < 0.15
    mobile_share = rng.uniform(0.2, 0.6, n)
    pool = mobile_pool_for(world, rng, region)
    sess_ip = home_ip_at(home, changes, t.sess_acct, t.sess_start)
    on_phone = mobile[t.sess_acct] & (rng.random(len(t.sess_acct)) < mobile_share[t.sess_acct])
    sess_ip[on_phone] = mobile_ip(world, rng, pool[t.sess_acct[on_phone]])
    ip = sess_ip[t.req_sess]
    proxy_user = rng.random(n) < 0.015
    via_proxy = proxy_user[t.req_acct] & (rng.random(len(ip)) < 0.8)
    proxies = world.proxy_pool()
    ip[via_proxy] = proxies[rng.integers(0, len(proxies), int(via_proxy.sum()))]

    client = pick_per_request(rng, clients, t.req_acct, usual=0.85)
    kind = per_request_choice(rng, kind_p, t.req_acct)
    model = choose_models(rng, t.req_acct, t.ts, mix, adopt, share)
    accounts = account_frame(
        created,
        email,
        card,
        values.REGION_COUNTRY.gather(region),
        signup,
        np.full(n, -1),
        group_ids("individual", np.arange(n)),
        "individual",
        False,
    )
    return make_part(rng, accounts, t.req_acct, t.ts, ip, client, kind, BASE_KINDS, model)


# --------------------------------------------------------------------------- companies

_BUSINESS_REGIONS = (
    np.array(
        [
            3.0
            if r.country in ("US", "GB", "DE", "FR", "NL", "CA")
            else 1.5
            if r.country in ("IN", "JP", "SG", "KR", "AU", "IL", "SE")
            else 0.5
            for r in values.REGIONS
        ]
    )
    * values.REGION_WEIGHTS
)


def companies(world: World, n: int) -> Part:
    """Employees of customer companies: one org, one corporate card, office NAT, office hours."""
    rng = world.rng("company")
    vol = world.scale.volume
    # Pareto sizes from 3 to 300 employees, capped so small scales still hold many companies.
    biggest = min(300, max(3, n // 5))
    draw = np.clip(np.round(3 * (1 + rng.pareto(1.1, 4 * n // 3 + 10))), 3, biggest)
    sizes = group_sizes(n, draw.astype(np.int64), min_size=3)
    n_co = len(sizes)
    comp = np.repeat(np.arange(n_co), sizes)
    rank = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes)

    region_c = values.pick_regions(rng, n_co, _BUSINESS_REGIONS)
    tz_c = values.REGION_TZ_SECONDS[region_c]
    org_c = world.orgs.new(n_co)
    domain_c = values.org_domains(rng, n_co)
    card_c = world.cards.new(values.draw_bins(rng, n_co))
    # Office egress: 1-4 NAT addresses in one /24 of a business ISP or a cloud security proxy.
    isp_base = values.residential_ipv4(rng, region_c) & ~np.int64(255)
    cloud_base = values.cloud_subnets(rng, n_co)
    base = np.where(rng.random(n_co) < 0.6, isp_base, cloud_base)
    hosts = np.sort(rng.choice(np.arange(2, 254), size=(n_co, 4)), axis=1)
    nat = world.ips.add_v4((base[:, None] + hosts).ravel()).reshape(n_co, 4)
    n_nat = rng.integers(1, 5, n_co)

    kind_c = rng.choice(3, n_co, p=[0.45, 0.30, 0.25])  # general, tools, agentic coding
    gateway = rng.random(n_co) < 0.65
    gw_client = np.full(n_co, -1, dtype=np.int64)
    domains = domain_c.to_list()
    for c in np.flatnonzero(gateway):
        name = domains[c].split(".")[0]
        version = f"{1 + c % 4}.{(c * 7) % 12}.{(c * 3) % 9}"
        gw_client[c] = world.clients.add(values.internal_client(name, version))

    new_co = rng.random(n_co) < 0.12
    created_c = np.where(
        new_co,
        START_US + (rng.random(n_co) * 26 * US_PER_DAY).astype(np.int64),
        created_before(rng, n_co, 400),
    )
    burst = created_c[comp] + (rng.random(n) * 36 * US_PER_HOUR).astype(np.int64)
    later = created_c[comp] + (rng.random(n) * (END_US - created_c[comp])).astype(np.int64)
    since = (rng.random(n) * (START_US - created_c[comp])).astype(np.int64)
    created = np.where(
        new_co[comp],
        np.where(rng.random(n) < 0.85, burst, np.minimum(later, END_US - US_PER_DAY)),
        created_c[comp] + np.maximum(since, 0),
    )

    local = values.person_locals(rng, n, styles=(0.6, 0.1, 0.2, 0, 0, 0.05, 0, 0.05))
    email = (
        pl.DataFrame({"l": local, "d": domain_c.gather(comp)})
        .select(pl.concat_str([pl.col("l"), pl.lit("@"), pl.col("d")]))
        .to_series()
    )
    email = values.make_unique(rng, email)

    # Tool owners run the company's internal templated tool; others use the model directly.
    n_tools = rng.integers(1, 4, n_co)
    tool_owner = (kind_c[comp] == 1) & (rank < np.minimum(n_tools[comp], sizes[comp] - 1))
    tool_cos = np.flatnonzero(kind_c == 1)
    tool_index = np.full(n_co, -1)
    tool_index[tool_cos] = np.arange(len(tool_cos))
    kinds = list(BASE_KINDS)
    for c in tool_cos:
        product = domains[c].split(".")[0].replace("-", " ").title()
        kinds.append((prompts.support_tool(product, int(rng.integers(0, 4))), "support"))
    alpha = np.array([[5, 3, 1.5, 0.3], [5, 3, 1, 0.3], [1, 3, 0.5, 6]])[kind_c[comp]]
    kind_p = np.zeros((n, len(kinds)))
    kind_p[:, :4] = gamma_mix(rng, alpha)
    owners = np.flatnonzero(tool_owner)
    kind_p[owners] = 0.01
    kind_p[owners, 4 + tool_index[comp[owners]]] = 0.97

    mix_c = rng.dirichlet([4, 2, 2], n_co)
    mix = gamma_mix(rng, mix_c[comp] * 25)
    adopt_c, share_c = adoption(rng, n_co, early=0.08, gradual=0.5)
    jitter = (rng.exponential(1.0, n) * US_PER_DAY).astype(np.int64)
    adopt = np.where(adopt_c[comp] < END_US, adopt_c[comp] + jitter, adopt_c[comp])
    share = share_c[comp]

    opts, w = world.clients_of({"desktop": 0.55, "sdk": 0.45})
    clients = per_account_choice(rng, n, opts, w)
    on_gw = gateway[comp] & (rng.random(n) < 0.85)
    clients[on_gw, 0] = gw_client[comp[on_gw]]

    n_req = lognormal_counts(rng, n, 16 * vol, 1.0, hi=int(3000 * vol) + 50)
    n_req = np.where(kind_c[comp] == 2, n_req * 2.5, n_req).astype(np.int64)
    n_req = np.where(tool_owner, lognormal_counts(rng, n, 220 * vol, 0.6), n_req)
    shift = (rng.normal(0, 0.6, n) * 3600).astype(np.int64)
    t = sessions(
        rng,
        n_req,
        tz_c[comp],
        created,
        day_weights(0.08)[None, :],
        HOURS["office"][None, :],
        per_session=8,
        minutes=25,
        shift_s=shift,
    )

    remote = rng.random(n) < 0.2
    home = world.ips.add_v4(values.residential_ipv4(rng, region_c[comp]))
    sess_co = comp[t.sess_acct]
    sess_ip = nat[sess_co, (rng.random(len(sess_co)) * n_nat[sess_co]).astype(np.int64)]
    at_home = remote[t.sess_acct] & (rng.random(len(sess_co)) < 0.5)
    sess_ip[at_home] = home[t.sess_acct[at_home]]
    ip = sess_ip[t.req_sess]

    signup = np.where(rng.random(n) < 0.9, nat[comp, 0], home)
    client = pick_per_request(rng, clients, t.req_acct, usual=0.9)
    kind = per_request_choice(rng, kind_p, t.req_acct)
    model = choose_models(rng, t.req_acct, t.ts, mix, adopt, share)
    accounts = account_frame(
        created,
        email,
        card_c[comp],
        values.REGION_COUNTRY.gather(region_c[comp]),
        signup,
        org_c[comp],
        group_ids("company", comp),
        "company",
        False,
    )
    return make_part(rng, accounts, t.req_acct, t.ts, ip, client, kind, kinds, model)


# --------------------------------------------------------------------------- universities


def universities(world: World, n: int) -> Part:
    """Students behind campus NAT, each their own customer, with shared coursework."""
    rng = world.rng("university")
    vol = world.scale.volume
    n_u = world.scale.universities
    shares = rng.dirichlet(np.full(n_u, 5.0))
    sizes = np.maximum(20, np.round(shares * n).astype(np.int64))
    sizes[-1] = max(1, n - int(sizes[:-1].sum()))
    campus = np.repeat(np.arange(n_u), sizes)
    n = int(sizes.sum())
    us = np.flatnonzero(np.array([r.country == "US" for r in values.REGIONS]))
    region_u = us[rng.integers(0, len(us), n_u)]
    names = rng.permutation(np.array(values.CAMPUS_NAMES))[:n_u]
    domain_u = pl.Series([f"{x}.edu" for x in names], dtype=pl.String)
    base = values.ipv4(
        rng.integers(128, 142, n_u), rng.integers(0, 256, n_u), rng.integers(0, 256, n_u), 0
    )
    hosts = np.sort(rng.choice(np.arange(2, 254), size=(n_u, 6)), axis=1)
    nat = world.ips.add_v4((base[:, None] + hosts).ravel()).reshape(n_u, 6)
    n_nat = rng.integers(2, 7, n_u)

    local = values.person_locals(rng, n, styles=(0.1, 0.05, 0.45, 0.1, 0, 0, 0.15, 0.15))
    email = values.make_unique(
        rng,
        pl.DataFrame({"l": local, "d": domain_u.gather(campus)})
        .select(pl.concat_str([pl.col("l"), pl.lit("@"), pl.col("d")]))
        .to_series(),
    )
    card = card_for(world, rng, rng.random(n) < 0.45)
    semester = START_US - (rng.uniform(40, 55, n) * US_PER_DAY).astype(np.int64)
    created = np.where(rng.random(n) < 0.8, semester, created_before(rng, n, 400))
    home = world.ips.add_v4(values.residential_ipv4(rng, region_u[campus]))

    # Courses and their deadlines drive bursts of near-identical questions.
    n_courses = len(prompts.COURSES)
    enrolled = np.argsort(rng.random((n, n_courses)), axis=1)[:, :3]
    n_enrolled = rng.integers(1, 4, n)
    deadlines = np.sort(rng.integers(2, N_LOCAL_DAYS - 1, (n_u, n_courses, 3)), axis=2)
    days = np.arange(N_LOCAL_DAYS)
    near = ((deadlines[..., None] - days) >= 0) & ((deadlines[..., None] - days) <= 2)
    boost = 1.0 + 5.0 * near.any(axis=2)  # (campus, course, day)
    day_w = day_weights(0.8)[None, None, :] * boost
    day_w = day_w.reshape(n_u * n_courses, N_LOCAL_DAYS)

    n_req = lognormal_counts(rng, n, 10 * vol, 1.0, hi=int(1500 * vol) + 30)
    sess_acct, req_acct, req_sess = split_sessions(rng, n_req, 5)
    sess_course = enrolled[
        sess_acct, (rng.random(len(sess_acct)) * n_enrolled[sess_acct]).astype(np.int64)
    ]
    shift = (rng.normal(0, 1.5, n) * 3600).astype(np.int64)
    tz = values.REGION_TZ_SECONDS[region_u[campus]]
    start = np.maximum(created, START_US)
    sess_start = local_times(
        rng,
        tz[sess_acct],
        start[sess_acct],
        np.full(len(sess_acct), END_US),
        day_w,
        HOURS["student"][None, :],
        day_group=campus[sess_acct] * n_courses + sess_course,
        hour_shift_s=shift[sess_acct],
    )
    ts = within_sessions(rng, sess_start, req_sess, 15)
    keep = ts < END_US
    req_acct, req_sess, ts = req_acct[keep], req_sess[keep], ts[keep]

    sess_campus = campus[sess_acct]
    sess_ip = nat[sess_campus, (rng.random(len(sess_acct)) * n_nat[sess_campus]).astype(np.int64)]
    off_campus = rng.random(len(sess_acct)) < 0.3
    sess_ip[off_campus] = home[sess_acct[off_campus]]
    ip = sess_ip[req_sess]

    kinds = list(BASE_KINDS)
    for u in range(n_u):
        for c in range(n_courses):
            kinds.append((prompts.assignment(world.seed * 97 + u, c), "assignment"))
    base_kind = per_request_choice(rng, np.tile([0.2, 0.1, 0.15, 0.0, 0.55], (n, 1)), req_acct)
    course_kind = 4 + campus[req_acct] * n_courses + sess_course[req_sess]
    kind = np.where(base_kind == 4, course_kind, base_kind)

    mix = gamma_mix(rng, np.tile([4.0, 2.0, 4.0], (n, 1)))
    adopt, share = adoption(rng, n, early=0.04, gradual=0.4)
    opts, w = world.clients_of({"desktop": 0.6, "mobile": 0.2, "sdk": 0.2})
    clients = per_account_choice(rng, n, opts, w)
    client = pick_per_request(rng, clients, req_acct, usual=0.85)
    model = choose_models(rng, req_acct, ts, mix, adopt, share)
    signup = np.where(rng.random(n) < 0.7, nat[campus, 0], home)
    accounts = account_frame(
        created,
        email,
        card,
        values.REGION_COUNTRY.gather(region_u[campus]),
        signup,
        np.full(n, -1),
        group_ids("university", np.arange(n)),
        "university",
        False,
    )
    return make_part(rng, accounts, req_acct, ts, ip, client, kind, kinds, model)


# --------------------------------------------------------------------------- mobile CGNAT


def cgnat_users(world: World, n: int) -> Part:
    """Unrelated phone users whose traffic leaves through their carrier's small NAT pools."""
    rng = world.rng("cgnat")
    vol = world.scale.volume
    carriers, _, _ = world.cgnat_pools()
    pool = rng.integers(0, len(carriers), n)
    region = np.array([values.CARRIERS[c].region for c in carriers])[pool]
    # A quarter roam between their carrier's two regional pools.
    sibling = np.where(pool % 2 == 0, pool + 1, pool - 1)
    roam = rng.random(n) < 0.25
    tz = values.REGION_TZ_SECONDS[region]
    created = created_mixed(rng, n, during=0.15, mean_days=200)
    email = values.make_unique(rng, values.freemail_emails(rng, n, plus_share=0.03))
    card = card_for(world, rng, rng.random(n) < 0.65, prepaid_share=0.01)
    kind_p = gamma_mix(rng, np.tile([6.0, 1.0, 1.5, 0.02], (n, 1)))
    mix = gamma_mix(rng, np.tile([5.0, 4.0, 1.0], (n, 1)))
    adopt, share = adoption(rng, n, early=0.04, gradual=0.4)
    opts, w = world.clients_of({"mobile": 0.75, "desktop": 0.1, "sdk": 0.15})
    clients = per_account_choice(rng, n, opts, w)

    n_req = lognormal_counts(rng, n, 8 * vol, 1.1, hi=int(1500 * vol) + 30)
    shift = (rng.normal(0, 1.5, n) * 3600).astype(np.int64)
    t = sessions(
        rng,
        n_req,
        tz,
        created,
        day_weights(1.1)[None, :],
        HOURS["mobile"][None, :],
        per_session=4,
        minutes=8,
        shift_s=shift,
    )
    sess_pool = np.where(
        roam[t.sess_acct] & (rng.random(len(t.sess_acct)) < 0.5),
        sibling[t.sess_acct],
        pool[t.sess_acct],
    )
    ip = mobile_ip(world, rng, sess_pool)[t.req_sess]
    signup = mobile_ip(world, rng, pool)
    client = pick_per_request(rng, clients, t.req_acct, usual=0.9)
    kind = per_request_choice(rng, kind_p, t.req_acct)
    model = choose_models(rng, t.req_acct, t.ts, mix, adopt, share)
    accounts = account_frame(
        created,
        email,
        card,
        values.REGION_COUNTRY.gather(region),
        signup,
        np.full(n, -1),
        group_ids("cgnat", np.arange(n)),
        "cgnat",
        False,
    )
    return make_part(rng, accounts, t.req_acct, t.ts, ip, client, kind, BASE_KINDS, model)


# --------------------------------------------------------------------------- CI benchmarks


def ci_benchmarks(world: World, n: int) -> Part:
    """Unrelated teams running public benchmark suites from shared CI runners on a schedule."""
    rng = world.rng("ci_benchmark")
    vol = world.scale.volume
    # Hosted CI egress: a few /24s per provider, shared by every customer of the service.
    subnets = np.concatenate(
        [values.cloud_subnets(rng, 3, ["azure"]), values.cloud_subnets(rng, 2, ["aws"])]
    )
    hosts = rng.integers(2, 254, (len(subnets), 40))
    runners = world.ips.add_v4((subnets[:, None] + hosts).ravel()).reshape(len(subnets), 40)
    provider = np.where(rng.random(n) < 0.7, rng.integers(0, 3, n), rng.integers(3, 5, n))

    region = values.pick_regions(rng, n, _BUSINESS_REGIONS)
    has_org = rng.random(n) < 0.55
    org = np.full(n, -1, dtype=np.int64)
    org[has_org] = world.orgs.new(int(has_org.sum()))
    domain = values.org_domains(rng, n)
    role = values.pick(rng, ["ml-eval", "ci", "evals", "bench", "mlops", "research-infra"], n)
    own = (
        pl.DataFrame({"r": role, "d": domain})
        .select(pl.concat_str([pl.col("r"), pl.lit("@"), pl.col("d")]))
        .to_series()
    )
    free = values.freemail_emails(rng, n)
    email = values.make_unique(
        rng, pl.select(pl.when(pl.Series(has_org)).then(own).otherwise(free)).to_series()
    )
    card = card_for(world, rng, np.ones(n, dtype=bool))
    created = created_mixed(rng, n, during=0.2, mean_days=300)

    # Cron schedules: midnight UTC, top of an hour, every six hours, weekdays only.
    sched = rng.choice(4, n, p=[0.4, 0.3, 0.15, 0.15])
    hour = np.where(sched == 0, 0, rng.integers(0, 24, n))
    minute = np.where((sched == 3) & (rng.random(n) < 0.5), 30, 0)
    per_day = np.where(sched == 2, 4, 1)
    limit = rng.choice([2, 3, 5, 10, 20], n, p=[0.2, 0.3, 0.3, 0.15, 0.05])
    limit = np.maximum(2, np.round(limit * vol**0.5)).astype(np.int64)
    suite = rng.integers(0, len(prompts.BENCHMARKS), n)
    suites = prompts.benchmark_suites()
    suite_len = np.array([len(s) for s in suites])
    suite_off = np.concatenate([[0], np.cumsum(suite_len)[:-1]])
    first_item = np.where(rng.random(n) < 0.8, 0, rng.integers(0, 100, n))

    runs_per_acct = WINDOW_DAYS * per_day
    run_acct = np.repeat(np.arange(n), runs_per_acct)
    k = np.arange(len(run_acct)) - np.repeat(
        np.cumsum(runs_per_acct) - runs_per_acct, runs_per_acct
    )
    day = k // per_day[run_acct]
    slot = k % per_day[run_acct]
    run_hour = (hour[run_acct] + slot * 6) % 24
    latency = rng.uniform(2, 90, len(run_acct)) * US_PER_SECOND
    run_start = (
        START_US
        + day * US_PER_DAY
        + run_hour * US_PER_HOUR
        + minute[run_acct] * 60 * US_PER_SECOND
        + latency.astype(np.int64)
    )
    weekday = (WINDOW_START_WEEKDAY + day) % 7
    ok = (run_start >= created[run_acct]) & (rng.random(len(run_acct)) > 0.08)
    ok &= ~((sched[run_acct] == 3) & (weekday >= 5))
    run_acct, run_start = run_acct[ok], run_start[ok]

    # Each run sends the first ``limit`` items of the suite, one after another.
    run_len = limit[run_acct]
    req_run = np.repeat(np.arange(len(run_acct)), run_len)
    pos = np.arange(len(req_run)) - np.repeat(np.cumsum(run_len) - run_len, run_len)
    acct = run_acct[req_run]
    gap = rng.lognormal(np.log(2.5), 0.5, n) * US_PER_SECOND
    ts = run_start[req_run] + (pos * gap[acct] + rng.random(len(pos)) * gap[acct]).astype(np.int64)
    keep = ts < END_US
    acct, ts, req_run, pos = acct[keep], ts[keep], req_run[keep], pos[keep]
    s = suite[acct]
    item = suite_off[s] + (first_item[acct] + pos) % suite_len[s]
    all_items = pl.concat(list(suites))
    run_ip = runners[provider[run_acct], rng.integers(0, 40, len(run_acct))]
    ip = run_ip[req_run]

    mix = gamma_mix(rng, np.tile([1.0, 0.6, 1.5], (n, 1)) * 0.6)
    adopt, share = adoption(rng, n, early=0.35, gradual=0.3)
    run_model = choose_models(rng, run_acct, run_start, mix, adopt, share)
    model = run_model[req_run]
    opts, w = world.clients_of({"sdk": 1.0})
    client = per_account_choice(rng, n, opts, w, k=1)[acct, 0]
    prompt = prompts.finish(all_items.gather(item), rng, null_share=0.01)
    inp, out = tokens(rng, np.zeros(len(acct), dtype=np.int64), ["benchmark"], prompt, model)
    accounts = account_frame(
        created,
        email,
        card,
        values.REGION_COUNTRY.gather(region),
        runners[provider, 0],
        org,
        group_ids("ci_benchmark", np.arange(n)),
        "ci_benchmark",
        False,
    )
    return Part(accounts, acct, ts, ip, client, model, inp, out, prompt)


# --------------------------------------------------------------------------- families


def families(world: World, n: int) -> Part:
    """Households: 2-5 accounts on one card and one home connection."""
    rng = world.rng("family")
    vol = world.scale.volume
    draw = rng.choice([2, 3, 4, 5], n, p=[0.35, 0.3, 0.2, 0.15])
    sizes = group_sizes(n, draw, min_size=2)
    n = int(sizes.sum())
    n_f = len(sizes)
    fam = np.repeat(np.arange(n_f), sizes)
    region_f = values.pick_regions(rng, n_f)
    home_f = home_ips(world, rng, region_f, v6_share=0.14)
    changes_f = address_changes(rng, n_f, (0.75, 0.2, 0.05))
    shared_card = rng.random(n_f) < 0.85
    card_f = card_for(world, rng, shared_card)
    last = values.pick(rng, values.LAST_NAMES, n_f).gather(fam)
    local = values.person_locals(rng, n, last=last)
    email = values.make_unique(rng, values.freemail_emails(rng, n, locals_=local))
    created = created_mixed(rng, n, during=0.12, mean_days=300)
    tz = values.REGION_TZ_SECONDS[region_f[fam]]

    kid = rng.random(n) < 0.35
    kind_p = gamma_mix(rng, np.where(kid[:, None], [[3, 1, 5, 0.02]], [[7, 1.5, 1.5, 0.05]]))
    mix = gamma_mix(rng, np.tile([6.0, 3.0, 1.5], (n, 1)))
    adopt, share = adoption(rng, n, early=0.03, gradual=0.4)
    opts, w = world.clients_of({"desktop": 0.5, "mobile": 0.45, "sdk": 0.05})
    clients = per_account_choice(rng, n, opts, w)
    n_req = lognormal_counts(rng, n, 9 * vol, 1.1, hi=int(1500 * vol) + 30)
    t = sessions(
        rng,
        n_req,
        tz,
        created,
        day_weights(1.2)[None, :],
        HOURS["evening"][None, :],
        per_session=5,
        shift_s=(rng.normal(0, 1.0, n) * 3600).astype(np.int64),
    )
    sess_fam = fam[t.sess_acct]
    sess_ip = home_ip_at(home_f, changes_f, sess_fam, t.sess_start)
    pool = mobile_pool_for(world, rng, region_f[fam])
    phone = rng.random(len(sess_fam)) < 0.15
    sess_ip[phone] = mobile_ip(world, rng, pool[t.sess_acct[phone]])
    ip = sess_ip[t.req_sess]
    client = pick_per_request(rng, clients, t.req_acct, usual=0.85)
    kind = per_request_choice(rng, kind_p, t.req_acct)
    model = choose_models(rng, t.req_acct, t.ts, mix, adopt, share)
    accounts = account_frame(
        created,
        email,
        card_f[fam],
        values.REGION_COUNTRY.gather(region_f[fam]),
        home_f[fam, 0],
        np.full(n, -1),
        group_ids("family", fam),
        "family",
        False,
    )
    return make_part(rng, accounts, t.req_acct, t.ts, ip, client, kind, BASE_KINDS, model)


# --------------------------------------------------------------------------- heavy apps


def heavy_apps(world: World, n: int) -> Part:
    """Single accounts behind a product feature: huge volume of one templated prompt."""
    rng = world.rng("heavy_app")
    vol = world.scale.volume
    region = values.pick_regions(rng, n, _BUSINESS_REGIONS)
    has_org = rng.random(n) < 0.7
    org = np.full(n, -1, dtype=np.int64)
    org[has_org] = world.orgs.new(int(has_org.sum()))
    domain = values.org_domains(rng, n)
    role = values.pick(rng, ["ops", "api", "dev", "platform", "admin", "founders"], n)
    email = values.make_unique(
        rng,
        pl.DataFrame({"r": role, "d": domain})
        .select(pl.concat_str([pl.col("r"), pl.lit("@"), pl.col("d")]))
        .to_series(),
    )
    card = card_for(world, rng, np.ones(n, dtype=bool))
    created = created_mixed(rng, n, during=0.1, mean_days=250)
    # Each app runs on 1-3 cloud hosts of one provider.
    subnets = values.cloud_subnets(rng, 3 * n)
    servers = world.ips.add_v4(subnets + rng.integers(2, 254, 3 * n)).reshape(n, 3)
    n_srv = rng.integers(1, 4, n)

    kinds = list(BASE_KINDS)
    names = domain.to_list()
    for i in range(n):
        app = names[i].split(".")[0].replace("-", "").title()
        kinds.append((prompts.app_template(int(rng.integers(0, 6)), app), "app"))
    kind_p = np.zeros((n, len(kinds)))
    kind_p[:, K_CHAT] = 0.01
    kind_p[:, K_CODE] = 0.01
    kind_p[np.arange(n), 4 + np.arange(n)] = 0.98

    n_req = lognormal_counts(rng, n, 1200 * vol, 0.8)
    tz = values.REGION_TZ_SECONDS[region]
    t = sessions(
        rng,
        n_req,
        tz,
        created,
        day_weights(0.9)[None, :],
        HOURS["mobile"][None, :],
        per_session=40,
        minutes=60,
    )
    ip = pick_from_rows(rng, servers, n_srv, t.req_acct)
    mix = gamma_mix(rng, np.tile([2.0, 8.0, 0.3], (n, 1)))
    adopt, share = adoption(rng, n, early=0.05, gradual=0.3)
    opts, w = world.clients_of({"sdk": 1.0})
    clients = per_account_choice(rng, n, opts, w)
    client = pick_per_request(rng, clients, t.req_acct, usual=0.99)
    kind = per_request_choice(rng, kind_p, t.req_acct)
    model = choose_models(rng, t.req_acct, t.ts, mix, adopt, share)
    accounts = account_frame(
        created,
        email,
        card,
        values.REGION_COUNTRY.gather(region),
        servers[:, 0],
        org,
        group_ids("heavy_app", np.arange(n)),
        "heavy_app",
        False,
    )
    return make_part(
        rng, accounts, t.req_acct, t.ts, ip, client, kind, kinds, model, null_share=0.02
    )


# --------------------------------------------------------------------------- resellers


def resellers(world: World, n: int) -> Part:
    """Legitimate resellers: one org and card, many sub-accounts serving their customers."""
    rng = world.rng("reseller")
    vol = world.scale.volume
    draw = rng.integers(10, 101, n // 10 + 2)
    sizes = group_sizes(n, draw, min_size=10)
    n_r = len(sizes)
    res = np.repeat(np.arange(n_r), sizes)
    org_r = world.orgs.new(n_r)
    card_r = world.cards.new(values.draw_bins(rng, n_r))
    domain_r = values.org_domains(rng, n_r)
    region_r = values.pick_regions(rng, n_r, _BUSINESS_REGIONS)
    base = values.cloud_subnets(rng, 2 * n_r).reshape(n_r, 2)
    hosts = rng.integers(2, 254, (n_r, 8))
    servers = world.ips.add_v4((base[:, [0, 0, 0, 0, 1, 1, 1, 1]] + hosts).ravel()).reshape(n_r, 8)
    n_srv = rng.integers(2, 9, n_r)
    opts, w = world.clients_of({"sdk": 1.0})
    backend = per_account_choice(rng, n_r, opts, w, k=1)[:, 0]

    tenant = values.random_hex(rng, n, 8)
    email = values.make_unique(
        rng,
        pl.DataFrame({"t": tenant, "d": domain_r.gather(res)})
        .select(pl.concat_str([pl.lit("t-"), pl.col("t"), pl.lit("@"), pl.col("d")]))
        .to_series(),
    )
    created = created_mixed(rng, n, during=0.2, mean_days=200)
    region = values.pick_regions(rng, n)  # the end customers live anywhere
    kind_p = gamma_mix(rng, np.tile([5.0, 2.5, 2.0, 0.2], (n, 1)))
    mix_r = rng.dirichlet([3, 4, 1.5], n_r)
    mix = gamma_mix(rng, mix_r[res] * 30)
    adopt_r, share_r = adoption(rng, n_r, early=0.2, gradual=0.5)
    n_req = lognormal_counts(rng, n, 18 * vol, 1.1, hi=int(2000 * vol) + 30)
    t = sessions(
        rng,
        n_req,
        values.REGION_TZ_SECONDS[region],
        created,
        day_weights(1.0)[None, :],
        HOURS["evening"][None, :],
        per_session=6,
    )
    r = res[t.req_acct]
    ip = pick_from_rows(rng, servers, n_srv, r)
    client = backend[r]
    kind = per_request_choice(rng, kind_p, t.req_acct)
    model = choose_models(rng, t.req_acct, t.ts, mix, adopt_r[res], share_r[res])
    accounts = account_frame(
        created,
        email,
        card_r[res],
        values.REGION_COUNTRY.gather(region_r[res]),
        servers[res, 0],
        org_r[res],
        group_ids("reseller", res),
        "reseller",
        False,
    )
    return make_part(rng, accounts, t.req_acct, t.ts, ip, client, kind, BASE_KINDS, model)


BUILDERS = {
    "individual": individuals,
    "company": companies,
    "university": universities,
    "cgnat": cgnat_users,
    "ci_benchmark": ci_benchmarks,
    "family": families,
    "heavy_app": heavy_apps,
    "reseller": resellers,
}
