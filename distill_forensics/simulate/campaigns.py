"""Attack campaigns: coordinated account networks harvesting model capabilities.

Every campaign sends capability-focused templated prompts (chain of thought, rubric
grading, agentic coding, tool calls) with output-heavy completions, and hides in its own
way. The camouflage knobs of the :class:`~distill_forensics.simulate.config.Mix` apply
to all of them.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from distill_forensics.simulate import prompts, values
from distill_forensics.simulate.benign import BASE_KINDS, gamma_mix
from distill_forensics.simulate.config import (
    END_US,
    M_NEW,
    M_REASONING,
    RELEASE_US,
    START_US,
    US_PER_DAY,
    US_PER_HOUR,
    WINDOW_DAYS,
    Mix,
)
from distill_forensics.simulate.timing import batch_windows, times_in_windows
from distill_forensics.simulate.world import (
    Kind,
    Part,
    World,
    account_frame,
    choose_models,
    make_part,
    per_account_choice,
    per_request_choice,
)

# --------------------------------------------------------------------------- shared tactics


def campaign_kinds(
    rng: np.random.Generator, families: dict[str, float]
) -> tuple[list[Kind], np.ndarray]:
    """Diverse benign-looking kinds followed by the operator's template families.

    Returns the kinds and the family weights (aligned with the kinds after the first 3).
    """
    kinds: list[Kind] = list(BASE_KINDS[:3])
    for fam in families:
        kinds.append((prompts.attack_generator(fam, rng), f"atk_{fam}"))
    return kinds, np.array(list(families.values()), dtype=float)


def kind_probs(
    rng: np.random.Generator, n: int, family_w: np.ndarray, diverse_mean: float
) -> np.ndarray:
    """Per-account prompt-kind probabilities: a camouflage share of diverse prompts."""
    m = min(max(diverse_mean, 1e-3), 0.95)
    diverse = rng.beta(2.0, 2.0 * (1 - m) / m, n)
    div = gamma_mix(rng, np.tile([5.0, 2.0, 2.0], (n, 1)))
    fam = gamma_mix(rng, np.tile(family_w * 20, (n, 1)))
    return np.hstack([div * diverse[:, None], fam * (1 - diverse[:, None])])


def fake_orgs(world: World, rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """Put a share of accounts into made-up organisations of 5-20 members."""
    org = np.full(n, -1, dtype=np.int64)
    members = np.flatnonzero(rng.random(n) < share)
    if len(members) == 0:
        return org
    sizes = rng.integers(5, 21, len(members) // 5 + 1)
    which = np.repeat(np.arange(len(sizes)), sizes)[: len(members)]
    handles = world.orgs.new(int(which.max()) + 1)
    org[rng.permutation(members)] = handles[which]
    return org


def pooled_cards(
    world: World,
    rng: np.random.Generator,
    n: int,
    per_card: tuple[int, int],
    unique_share: float,
    bins: pl.Series | None = None,
) -> np.ndarray:
    """Cards reused across groups of accounts, plus a camouflage share of unique cards."""
    unique = rng.random(n) < unique_share
    card = np.full(n, -1, dtype=np.int64)
    card[unique] = world.cards.new(values.draw_bins(rng, int(unique.sum())))
    pooled = rng.permutation(np.flatnonzero(~unique))
    if len(pooled):
        sizes = rng.integers(per_card[0], per_card[1] + 1, len(pooled) // per_card[0] + 1)
        which = np.repeat(np.arange(len(sizes)), sizes)[: len(pooled)]
        n_cards = int(which.max()) + 1
        b = values.draw_bins(rng, n_cards) if bins is None else bins.head(n_cards)
        card[pooled] = world.cards.new(b)[which]
    return card


def attack_clients(
    world: World, rng: np.random.Generator, n: int, own: np.ndarray, common_share: float
) -> np.ndarray:
    """The campaign's own tooling, or a common SDK client for the camouflaged share."""
    opts, w = world.clients_of({"sdk": 0.8, "desktop": 0.2})
    common = per_account_choice(rng, n, opts, w, k=1)[:, 0]
    mine = own[rng.integers(0, len(own), n)]
    return np.where(rng.random(n) < common_share, common, mine)


def campaign_emails(rng: np.random.Generator, n: int) -> pl.Series:
    """Throwaway-looking but ordinary free-mail addresses."""
    local = values.person_locals(rng, n, styles=(0.1, 0.1, 0.15, 0.15, 0.15, 0.05, 0.15, 0.15))
    return values.make_unique(rng, values.freemail_emails(rng, n, 0.06, locals_=local))


def group(kind: str, n: int) -> pl.Series:
    """The campaign's single group id, repeated per account."""
    return pl.Series([f"{kind}-0"] * n, dtype=pl.String)


def _meta(kind: str, n: int, **extra: object) -> dict[str, object]:
    return {"group_id": f"{kind}-0", "kind": kind, "accounts": n, **extra}


# --------------------------------------------------------------------------- hydra


def hydra(world: World, n: int, mix: Mix) -> Part:
    """A proxy network of thousands of short-lived accounts run in synchronized batches."""
    rng = world.rng("hydra")
    vol = world.scale.volume
    # Slots of concurrently active accounts; each banned account is replaced by a new one.
    mean_life = 3.8
    k_slots = max(1, round(n * mean_life / (WINDOW_DAYS + mean_life)))
    while True:
        life = np.clip(rng.lognormal(np.log(3.4), 0.45, (k_slots, 40)), 0.8, 10.0) * US_PER_DAY
        first = START_US - (rng.random(k_slots) * life[:, 0]).astype(np.int64)
        starts = first[:, None] + np.hstack(
            [np.zeros((k_slots, 1)), np.cumsum(life, axis=1)[:, :-1]]
        ).astype(np.int64)
        ok = starts < END_US - 6 * US_PER_HOUR
        if ok.sum() >= n:
            break
        k_slots = int(k_slots * 1.2) + 1
    start_all, life_all = starts[ok], life[ok].astype(np.int64)
    keep = np.sort(rng.choice(len(start_all), n, replace=False))
    start = start_all[keep]
    end = np.minimum(start + life_all[keep], END_US)
    created = start - (rng.random(n) * 6 * US_PER_HOUR).astype(np.int64)

    proxies = world.proxy_pool()
    card = pooled_cards(world, rng, n, (5, 15), mix.unique_card_share)
    org = fake_orgs(world, rng, n, mix.fake_org_share)
    email = campaign_emails(rng, n)
    region = values.pick_regions(rng, n)
    own = world.niche[:2]
    client_acct = attack_clients(world, rng, n, own, mix.common_client_share)
    kinds, fam_w = campaign_kinds(rng, {"cot": 0.4, "rubric": 0.2, "agentic": 0.25, "tool": 0.15})
    kind_p = kind_probs(rng, n, fam_w, mix.diverse_share)

    # Load-balanced: every account does about the same work per day it is alive.
    alive = (end - np.maximum(start, START_US)) / US_PER_DAY
    n_req = np.maximum(1, np.round(36 * vol * alive * rng.uniform(0.9, 1.1, n))).astype(np.int64)
    acct = np.repeat(np.arange(n), n_req)
    hours = (1.5, 4.0) if mix.jitter < 0.2 else (3.0, 7.0)
    w_start, w_end = batch_windows(rng, (2, 3), hours)
    lo = np.maximum(start, START_US)
    ts = times_in_windows(rng, lo[acct], end[acct], w_start, w_end, mix.jitter)
    ip = proxies[rng.integers(0, len(proxies), len(acct))]
    client = client_acct[acct]
    kind = per_request_choice(rng, kind_p, acct)
    model_mix = gamma_mix(rng, np.tile([3.5, 0.5, 6.0], (n, 1)))
    adopt = np.full(n, RELEASE_US + 2 * US_PER_DAY) + (rng.random(n) * US_PER_DAY).astype(np.int64)
    model = choose_models(rng, acct, ts, model_mix, adopt, np.full(n, 0.5))
    accounts = account_frame(
        created,
        email,
        card,
        values.REGION_COUNTRY.gather(region),
        proxies[rng.integers(0, len(proxies), n)],
        org,
        group("hydra", n),
        "hydra",
        True,
    )
    meta = _meta(
        "hydra", n, proxy_ips=len(proxies), batch_windows=len(w_start), concurrent_slots=k_slots
    )
    return make_part(rng, accounts, acct, ts, ip, client, kind, kinds, model, meta=meta)


# --------------------------------------------------------------------------- residential proxy


def _mailbox_variants(rng: np.random.Generator, n: int) -> pl.Series:
    """Gmail addresses where groups of 2-4 accounts reuse one mailbox via + tags and dots."""
    in_group = rng.random(n) < 0.4
    members = np.flatnonzero(in_group)
    sizes = rng.integers(2, 5, len(members) // 2 + 1)
    box = np.full(n, -1)
    box[members] = np.repeat(np.arange(len(sizes)), sizes)[: len(members)]
    solo = np.flatnonzero(~in_group)
    box[solo] = box.max() + 1 + np.arange(len(solo))
    base = values.person_locals(rng, int(box.max()) + 1, styles=(0, 0.5, 0, 0, 0.3, 0, 0, 0.2))
    local = base.gather(box)
    variant = np.where(in_group, rng.integers(0, 3, n), 0)
    tag = values.pick(rng, values.PLUS_TAGS, n)
    cut = pl.Series(rng.integers(1, 4, n))
    df = pl.DataFrame({"l": local, "v": variant, "t": tag, "c": cut})
    lc = pl.col("l")
    dotted = pl.concat_str([lc.str.slice(0, pl.col("c")), pl.lit("."), lc.str.slice(pl.col("c"))])
    gmail = df.select(
        pl.concat_str(
            [
                pl.when(pl.col("v") == 1)
                .then(pl.concat_str([lc, pl.lit("+"), pl.col("t")]))
                .when(pl.col("v") == 2)
                .then(dotted)
                .otherwise(lc),
                pl.lit("@gmail.com"),
            ]
        )
    ).to_series()
    other = values.freemail_emails(rng, n, 0.02, locals_=local)
    return values.make_unique(
        rng, pl.select(pl.when(pl.Series(in_group)).then(gmail).otherwise(other)).to_series()
    )


def residential_proxy(world: World, n: int, mix: Mix) -> Part:
    """Accounts signed up in bursts; every request exits from a different home IP."""
    rng = world.rng("residential_proxy")
    vol = world.scale.volume
    n_bursts = max(2, n // 40)
    burst_day = np.concatenate([rng.uniform(0.5, 3, 1), rng.uniform(0.5, 24, n_bursts - 1)])
    burst_t = START_US + (burst_day * US_PER_DAY).astype(np.int64)
    created = burst_t[rng.integers(0, n_bursts, n)] + (rng.random(n) * 3 * US_PER_HOUR).astype(
        np.int64
    )
    start = created + (rng.random(n) * 12 * US_PER_HOUR).astype(np.int64)
    banned = rng.random(n) < 0.3
    end = np.where(banned, start + (rng.uniform(2, 8, n) * US_PER_DAY).astype(np.int64), END_US)
    end = np.minimum(end, END_US)

    prepaid = pl.Series([values.PREPAID_BIN] * n, dtype=pl.String)
    unique_other = rng.random(n) < mix.unique_card_share * 0.5
    bins = pl.select(
        pl.when(pl.Series(unique_other)).then(values.draw_bins(rng, n)).otherwise(prepaid)
    ).to_series()
    card = world.cards.new(bins)
    us = np.flatnonzero(np.array([r.country == "US" for r in values.REGIONS]))
    region = np.where(
        rng.random(n) < 0.8, us[rng.integers(0, len(us), n)], values.pick_regions(rng, n)
    )
    email = _mailbox_variants(rng, n)
    org = fake_orgs(world, rng, n, mix.fake_org_share * 0.5)
    client_acct = attack_clients(
        world, rng, n, np.array([world.rare]), mix.common_client_share * 0.5
    )
    kinds, fam_w = campaign_kinds(rng, {"cot": 0.5, "rubric": 0.5})
    kind_p = kind_probs(rng, n, fam_w, mix.diverse_share)

    alive = (end - start) / US_PER_DAY
    n_req = np.maximum(1, np.round(12 * vol * alive * rng.lognormal(0, 0.3, n))).astype(np.int64)
    acct = np.repeat(np.arange(n), n_req)
    w_start, w_end = batch_windows(rng, (1, 2), (2.0, 5.0))
    ts = times_in_windows(rng, start[acct], end[acct], w_start, w_end, mix.jitter)
    # A fresh residential exit per request, mostly in the US like the cards.
    exit_region = np.where(
        rng.random(len(acct)) < 0.7,
        us[rng.integers(0, len(us), len(acct))],
        values.pick_regions(rng, len(acct)),
    )
    ip = world.ips.add_v4(values.residential_ipv4(rng, exit_region))
    signup = world.ips.add_v4(values.residential_ipv4(rng, region))
    kind = per_request_choice(rng, kind_p, acct)
    model_mix = gamma_mix(rng, np.tile([4.0, 1.0, 5.0], (n, 1)))
    adopt = np.full(n, RELEASE_US + US_PER_DAY) + (rng.random(n) * 2 * US_PER_DAY).astype(np.int64)
    model = choose_models(rng, acct, ts, model_mix, adopt, np.full(n, 0.6))
    accounts = account_frame(
        created,
        email,
        card,
        values.REGION_COUNTRY.gather(region),
        signup,
        org,
        group("residential_proxy", n),
        "residential_proxy",
        True,
    )
    meta = _meta("residential_proxy", n, signup_bursts=n_bursts, card_bin=values.PREPAID_BIN)
    return make_part(rng, accounts, acct, ts, ip, client_acct[acct], kind, kinds, model, meta=meta)


# --------------------------------------------------------------------------- low and slow


def low_and_slow(world: World, n: int, mix: Mix) -> Part:
    """Many quiet accounts, one static cloud IP each in neighbouring addresses."""
    rng = world.rng("low_and_slow")
    provider = ["digitalocean", "vultr", "hetzner"][int(rng.integers(0, 3))]
    n_sub = max(2, -(-n // 80))
    subnets = values.cloud_subnets(rng, n_sub, [provider])
    created = np.sort(START_US + (rng.uniform(1, 6, n) * US_PER_DAY).astype(np.int64))
    # VMs come up in creation order and take consecutive addresses.
    per_sub = -(-n // n_sub)
    first_host = rng.integers(10, 254 - per_sub, n_sub) if per_sub < 240 else np.full(n_sub, 2)
    pos = np.arange(n)
    sub = pos // per_sub
    host = first_host[sub] + pos % per_sub
    static = world.ips.add_v4(subnets[sub] + host)

    card = world.cards.new(values.draw_bins(rng, n))
    email = campaign_emails(rng, n)
    region = values.pick_regions(rng, n)
    org = fake_orgs(world, rng, n, mix.fake_org_share)
    opts, w = world.clients_of({"sdk": 1.0})
    client_acct = per_account_choice(rng, n, opts, w, k=1)[:, 0]
    kinds, fam_w = campaign_kinds(rng, {"agentic": 0.4, "tool": 0.3, "cot": 0.3})
    kind_p = kind_probs(rng, n, fam_w, mix.diverse_share)

    n_req = rng.integers(5, 41, n)
    acct = np.repeat(np.arange(n), n_req)
    lo = created[acct] + US_PER_HOUR
    ts = lo + (rng.random(len(acct)) * (END_US - lo)).astype(np.int64)
    kind = per_request_choice(rng, kind_p, acct)
    model_mix = gamma_mix(rng, np.tile([4.0, 1.0, 4.0], (n, 1)))
    adopt = RELEASE_US + (rng.exponential(2.0, n) * US_PER_DAY).astype(np.int64)
    model = choose_models(rng, acct, ts, model_mix, adopt, np.full(n, 0.4))
    accounts = account_frame(
        created,
        email,
        card,
        values.REGION_COUNTRY.gather(region),
        static,
        org,
        group("low_and_slow", n),
        "low_and_slow",
        True,
    )
    meta = _meta("low_and_slow", n, provider=provider, subnets=n_sub)
    # Row order of ``static`` follows creation; shuffle nothing else: ids are assigned later.
    return make_part(
        rng, accounts, acct, ts, static[acct], client_acct[acct], kind, kinds, model, meta=meta
    )


# --------------------------------------------------------------------------- model pivot


def model_pivot(world: World, n: int, mix: Mix) -> Part:
    """Accounts that appear around the frontier-4 release and move onto it within a day."""
    rng = world.rng("model_pivot")
    vol = world.scale.volume
    pre = rng.random(n) < 0.5
    created = np.where(
        pre,
        START_US + (rng.uniform(17, 20.6, n) * US_PER_DAY).astype(np.int64),
        RELEASE_US + (rng.uniform(0, 20, n) * US_PER_HOUR).astype(np.int64),
    )
    created = np.minimum(created, RELEASE_US + 20 * US_PER_HOUR)
    switch = np.maximum(created, RELEASE_US) + (rng.uniform(0, 4, n) * US_PER_HOUR).astype(np.int64)
    switch = np.minimum(switch, RELEASE_US + 24 * US_PER_HOUR - 1)

    dc = values.cloud_subnets(rng, 3, ["hetzner", "ovh"])
    n_ips = int(rng.integers(3, 7))
    servers = world.ips.add_v4(dc[rng.integers(0, 3, n_ips)] + rng.integers(2, 254, n_ips))
    pair = servers[rng.integers(0, n_ips, (n, 2))]
    card = pooled_cards(world, rng, n, (15, 35), mix.unique_card_share)
    email = campaign_emails(rng, n)
    region = values.pick_regions(rng, n)
    org = fake_orgs(world, rng, n, mix.fake_org_share)
    go = world.clients.add(values.Client("Go-http-client/2.0", values.TLS_GO, "sdk"))
    client_acct = attack_clients(world, rng, n, np.array([go]), mix.common_client_share)
    kinds, fam_w = campaign_kinds(rng, {"cot": 0.7, "rubric": 0.3})
    kind_p = kind_probs(rng, n, fam_w, mix.diverse_share)

    n_pre = np.where(pre, rng.integers(2, 12, n), 0)
    post_days = (END_US - switch) / US_PER_DAY
    n_post = np.maximum(1, np.round(18 * vol * post_days * rng.lognormal(0, 0.3, n)))
    n_post = n_post.astype(np.int64)
    acct_pre = np.repeat(np.arange(n), n_pre)
    span = np.maximum(switch - created, US_PER_HOUR)
    ts_pre = created[acct_pre] + (rng.random(len(acct_pre)) * span[acct_pre]).astype(np.int64)
    acct_post = np.repeat(np.arange(n), n_post)
    w_start, w_end = batch_windows(rng, (3, 4), (2.0, 5.0))
    ts_post = times_in_windows(
        rng,
        switch[acct_post],
        np.full(len(acct_post), END_US),
        w_start,
        w_end,
        max(mix.jitter, 0.3),
    )
    acct = np.concatenate([acct_pre, acct_post])
    ts = np.concatenate([ts_pre, ts_post])
    after = np.concatenate([np.zeros(len(acct_pre), bool), np.ones(len(acct_post), bool)])
    ip = pair[acct, (rng.random(len(acct)) < 0.3).astype(np.int64)]
    model = np.where(rng.random(len(acct)) < 0.7, M_REASONING, 0).astype(np.int8)
    model = np.where(after & (rng.random(len(acct)) < 0.95) & (ts >= RELEASE_US), M_NEW, model)
    kind = per_request_choice(rng, kind_p, acct)
    accounts = account_frame(
        created,
        email,
        card,
        values.REGION_COUNTRY.gather(region),
        pair[:, 0],
        org,
        group("model_pivot", n),
        "model_pivot",
        True,
    )
    meta = _meta("model_pivot", n, datacenter_ips=n_ips)
    return make_part(
        rng,
        accounts,
        acct,
        ts,
        ip,
        client_acct[acct],
        kind,
        kinds,
        model.astype(np.int8),
        meta=meta,
    )


BUILDERS = {
    "hydra": hydra,
    "residential_proxy": residential_proxy,
    "low_and_slow": low_and_slow,
    "model_pivot": model_pivot,
}
