"""When requests happen: diurnal and weekly rhythms in local time, sessions, batch windows.

All samplers work on whole arrays: one row per session or request, with the account's
group (time-zone profile), active interval and rhythm looked up by index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distill_forensics.simulate.config import (
    END_US,
    START_US,
    US_PER_DAY,
    US_PER_HOUR,
    US_PER_SECOND,
    WINDOW_DAYS,
    WINDOW_START_WEEKDAY,
)

#: Local calendar days covered by the window in any time zone: the day before it and 30.
N_LOCAL_DAYS = WINDOW_DAYS + 2


def _norm(w: Sequence[float] | np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=float)
    return w / w.sum()


HOURS: dict[str, np.ndarray] = {
    # Hobbyists: a little at lunch, mostly evenings, some late nights.
    "evening": _norm(
        [
            2,
            1,
            0.6,
            0.3,
            0.2,
            0.2,
            0.5,
            1.2,
            2,
            2.5,
            3,
            3.2,
            3.8,
            3.5,
            3.2,
            3.2,
            3.4,
            4,
            4.8,
            5.6,
            6,
            5.6,
            4.6,
            3.4,
        ]
    ),
    # Office workers: 9 to 6 with a lunch dip.
    "office": _norm(
        [
            0.1,
            0.05,
            0.05,
            0.05,
            0.05,
            0.1,
            0.3,
            1.2,
            4,
            7,
            8,
            7.6,
            4.5,
            6.5,
            7.8,
            7.5,
            6.8,
            4.5,
            1.8,
            1,
            0.8,
            0.6,
            0.4,
            0.2,
        ]
    ),
    # Students: late mornings to well past midnight.
    "student": _norm(
        [
            3.5,
            2.6,
            1.6,
            0.8,
            0.3,
            0.2,
            0.2,
            0.4,
            1.2,
            2.4,
            3.2,
            3.6,
            3.4,
            3.8,
            4.2,
            4.2,
            4,
            3.8,
            3.8,
            4.4,
            5,
            5.4,
            5.4,
            4.6,
        ]
    ),
    # Phones: commute peaks and evenings.
    "mobile": _norm(
        [
            1.5,
            0.8,
            0.4,
            0.2,
            0.2,
            0.5,
            1.5,
            3.5,
            4.5,
            3.4,
            3,
            3.2,
            4,
            3.4,
            3,
            3.2,
            3.6,
            4.6,
            5,
            4.8,
            5,
            4.8,
            4,
            2.8,
        ]
    ),
    # Services that run around the clock.
    "flat": _norm(np.ones(24)),
}


def weekday_of_local_day(day: np.ndarray) -> np.ndarray:
    """Weekday (Monday = 0) of local day index ``day`` (index 1 is the window's first day)."""
    return (WINDOW_START_WEEKDAY + day - 1) % 7


def day_weights(weekend: float, extra: np.ndarray | None = None) -> np.ndarray:
    """Weights of the local days: ``weekend`` times lighter on Saturday and Sunday."""
    days = np.arange(N_LOCAL_DAYS)
    w = np.where(weekday_of_local_day(days) >= 5, weekend, 1.0)
    if extra is not None:
        w = w * extra
    return w


def grouped_choice(
    rng: np.random.Generator,
    weights: np.ndarray,
    group: np.ndarray,
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
) -> np.ndarray:
    """Per row, draw an index from ``weights[group]`` restricted to ``lo..hi`` inclusive.

    ``weights`` is (groups x categories); rows whose range has no mass fall back to uniform.
    """
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    n_groups, k = w.shape
    cdf = np.cumsum(w, axis=1)
    cdf = cdf / cdf[:, -1:]
    n = len(group)
    lo = np.zeros(n, dtype=np.int64) if lo is None else np.clip(lo, 0, k - 1)
    hi = np.full(n, k - 1, dtype=np.int64) if hi is None else np.clip(hi, 0, k - 1)
    hi = np.maximum(hi, lo)
    c_hi = cdf[group, hi]
    c_lo = np.where(lo > 0, cdf[group, np.maximum(lo - 1, 0)], 0.0)
    u = rng.random(n)
    flat = (cdf + np.arange(n_groups)[:, None]).ravel()
    target = group + c_lo + u * (c_hi - c_lo)
    idx = np.searchsorted(flat, target, side="right") - group * k
    idx = np.clip(idx, lo, hi)
    empty = c_hi - c_lo <= 0
    if empty.any():
        span = hi[empty] - lo[empty] + 1
        idx[empty] = lo[empty] + (rng.random(int(empty.sum())) * span).astype(np.int64)
    return idx


def local_times(
    rng: np.random.Generator,
    tz_s: np.ndarray,
    start_us: np.ndarray,
    end_us: np.ndarray,
    day_w: np.ndarray,
    hour_w: np.ndarray,
    day_group: np.ndarray | None = None,
    hour_group: np.ndarray | None = None,
    hour_shift_s: np.ndarray | None = None,
) -> np.ndarray:
    """UTC instants following local day and hour rhythms, inside ``[start_us, end_us)``.

    ``tz_s``, ``start_us``, ``end_us`` and the optional group/shift arrays hold one value
    per row. Day weights are indexed by local day (see :data:`N_LOCAL_DAYS`).
    """
    n = len(tz_s)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    tz_us = tz_s.astype(np.int64) * US_PER_SECOND
    lo = (start_us + tz_us - START_US) // US_PER_DAY + 1
    hi = (end_us - 1 + tz_us - START_US) // US_PER_DAY + 1
    dg = np.zeros(n, dtype=np.int64) if day_group is None else day_group
    hg = np.zeros(n, dtype=np.int64) if hour_group is None else hour_group
    day = grouped_choice(rng, day_w, dg, lo, hi)
    hour = grouped_choice(rng, hour_w, hg)
    t = START_US + (day - 1) * US_PER_DAY + hour * US_PER_HOUR
    t = t + (rng.random(n) * US_PER_HOUR).astype(np.int64) - tz_us
    if hour_shift_s is not None:
        t = t + hour_shift_s.astype(np.int64) * US_PER_SECOND
    bad = (t < start_us) | (t >= end_us)
    if bad.any():
        span = (end_us[bad] - start_us[bad]).astype(float)
        t[bad] = start_us[bad] + (rng.random(int(bad.sum())) * span).astype(np.int64)
    return t


def split_sessions(
    rng: np.random.Generator, n_req: np.ndarray, per_session: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group each account's requests into sessions.

    Returns (session -> account, request -> account, request -> session); sessions hold
    ``per_session`` requests on average, varying by account.
    """
    n_acct = len(n_req)
    size = per_session * rng.lognormal(0.0, 0.5, n_acct)
    n_sess = np.clip(np.ceil(n_req / np.maximum(size, 1.0)), 1, np.maximum(n_req, 1))
    n_sess = n_sess.astype(np.int64)
    sess_acct = np.repeat(np.arange(n_acct), n_sess)
    req_acct = np.repeat(np.arange(n_acct), n_req)
    first = np.concatenate([[0], np.cumsum(n_sess)[:-1]])
    req_sess = first[req_acct] + (rng.random(len(req_acct)) * n_sess[req_acct]).astype(np.int64)
    return sess_acct, req_acct, req_sess


def within_sessions(
    rng: np.random.Generator,
    sess_start: np.ndarray,
    req_sess: np.ndarray,
    median_minutes: float = 12.0,
) -> np.ndarray:
    """Request instants spread over each session's (lognormal) duration."""
    dur = rng.lognormal(np.log(median_minutes * 60 * US_PER_SECOND), 0.8, len(sess_start))
    off = rng.random(len(req_sess)) * dur[req_sess]
    return sess_start[req_sess] + off.astype(np.int64)


def batch_windows(
    rng: np.random.Generator, per_day: tuple[int, int], hours: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """An operator's work schedule: a few busy windows a day at drifting hours (UTC)."""
    counts = rng.integers(per_day[0], per_day[1] + 1, WINDOW_DAYS + 1)
    day = np.repeat(np.arange(-1, WINDOW_DAYS), counts)
    start = START_US + day * US_PER_DAY + (rng.random(len(day)) * US_PER_DAY).astype(np.int64)
    dur = (rng.uniform(hours[0], hours[1], len(day)) * US_PER_HOUR).astype(np.int64)
    order = np.argsort(start, kind="stable")
    return start[order], start[order] + dur[order]


def times_in_windows(
    rng: np.random.Generator,
    req_start: np.ndarray,
    req_end: np.ndarray,
    win_start: np.ndarray,
    win_end: np.ndarray,
    jitter: float,
) -> np.ndarray:
    """Request instants inside the batch windows overlapping each account's life.

    ``req_start``/``req_end`` bound each request's account life; a ``jitter`` share of
    requests (and any account without a window) fall anywhere in that life.
    """
    n = len(req_start)
    lo = np.searchsorted(win_end, req_start, side="right")
    hi = np.searchsorted(win_start, req_end, side="left")
    has = hi > lo
    w = lo + (rng.random(n) * np.maximum(hi - lo, 1)).astype(np.int64)
    w = np.clip(w, 0, len(win_start) - 1)
    a = np.maximum(win_start[w], req_start)
    b = np.minimum(win_end[w], req_end)
    t = a + (rng.random(n) * np.maximum(b - a, 1)).astype(np.int64)
    loose = ~has | (b <= a) | (rng.random(n) < jitter)
    span = (req_end - req_start).astype(float)
    t_loose = req_start + (rng.random(n) * span).astype(np.int64)
    return np.clip(np.where(loose, t_loose, t), START_US, END_US - 1)
