"""Tests of the traffic simulator: schema, determinism, populations and the CLI."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from distill_forensics.cli.simulate import simulate as simulate_cmd
from distill_forensics.errors import InputError
from distill_forensics.simulate import SimulatedData, generate, simulate, write
from distill_forensics.simulate.values import hex_strings, ipv4_text

UTC_US = pl.Datetime("us", "UTC")
LOG_COLUMNS = {
    "timestamp": UTC_US,
    "account_id": pl.String,
    "org_id": pl.String,
    "api_key_id": pl.String,
    "ip": pl.String,
    "user_agent": pl.String,
    "tls_fingerprint": pl.String,
    "model": pl.String,
    "input_tokens": pl.Int64,
    "output_tokens": pl.Int64,
    "prompt": pl.String,
}
ACCOUNT_COLUMNS = {
    "account_id": pl.String,
    "created_at": UTC_US,
    "email": pl.String,
    "payment_fingerprint": pl.String,
    "card_bin": pl.String,
    "billing_country": pl.String,
    "signup_ip": pl.String,
}
TRUTH_COLUMNS = {
    "account_id": pl.String,
    "group_id": pl.String,
    "group_kind": pl.String,
    "is_attack": pl.Boolean,
}
BENIGN = {
    "individual",
    "company",
    "university",
    "cgnat",
    "ci_benchmark",
    "family",
    "heavy_app",
    "reseller",
}
ATTACKS = {"hydra", "residential_proxy", "low_and_slow", "model_pivot"}
RELEASE = datetime(2026, 3, 21, 16, tzinfo=UTC)
FILES = {
    "parquet": ["accounts.parquet", "logs.parquet", "truth.parquet"],
    "csv": ["accounts.csv", "logs.csv.gz", "truth.csv"],
}


@pytest.fixture(scope="module")
def tiny() -> SimulatedData:
    return generate("tiny", seed=11)


@pytest.fixture(scope="module")
def small() -> SimulatedData:
    return generate("small", seed=0)


def _bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files(tmp_path: Path, tiny: SimulatedData) -> None:
    again = generate("tiny", seed=11)
    for fmt in ("parquet", "csv"):
        a = write(tiny, tmp_path / f"a-{fmt}", fmt)
        write(again, tmp_path / f"b-{fmt}", fmt)
        assert sorted(Path(p).name for p in a.values()) == FILES[fmt]
        assert _bytes(tmp_path / f"a-{fmt}") == _bytes(tmp_path / f"b-{fmt}")


def test_different_seed_differs(tiny: SimulatedData) -> None:
    other = generate("tiny", seed=12)
    assert not other.logs.equals(tiny.logs)
    assert set(other.accounts["account_id"]).isdisjoint(tiny.accounts["account_id"])


# --------------------------------------------------------------------------- schema


def test_schema_is_exact(tiny: SimulatedData) -> None:
    assert dict(tiny.logs.schema) == LOG_COLUMNS
    assert dict(tiny.accounts.schema) == ACCOUNT_COLUMNS
    assert dict(tiny.truth.schema) == TRUTH_COLUMNS


def test_files_round_trip_with_schema(tmp_path: Path, tiny: SimulatedData) -> None:
    write(tiny, tmp_path, "parquet")
    assert dict(pl.read_parquet(tmp_path / "logs.parquet").schema) == LOG_COLUMNS
    assert dict(pl.read_parquet(tmp_path / "accounts.parquet").schema) == ACCOUNT_COLUMNS
    assert pl.read_parquet(tmp_path / "truth.parquet").equals(tiny.truth)
    write(tiny, tmp_path, "csv")
    csv = pl.read_csv(tmp_path / "logs.csv.gz", try_parse_dates=True)
    assert csv.columns == list(LOG_COLUMNS)
    assert csv.schema["timestamp"] == UTC_US
    assert csv["timestamp"].equals(tiny.logs["timestamp"])
    accounts = pl.read_csv(
        tmp_path / "accounts.csv", try_parse_dates=True, schema_overrides={"card_bin": pl.String}
    )
    assert accounts.columns == list(ACCOUNT_COLUMNS)
    assert accounts["card_bin"].equals(tiny.accounts["card_bin"])


def test_ids_are_opaque(tiny: SimulatedData) -> None:
    assert tiny.accounts["account_id"].str.contains(r"^acct_[0-9a-f]{12}$").all()
    assert tiny.logs["api_key_id"].str.contains(r"^key_[0-9a-f]{16}$").all()
    assert tiny.logs["org_id"].drop_nulls().str.contains(r"^org_[0-9a-f]{12}$").all()
    pm = tiny.accounts["payment_fingerprint"].drop_nulls()
    assert pm.str.contains(r"^pm_[0-9a-f]{16}$").all()
    assert tiny.accounts["card_bin"].drop_nulls().str.contains(r"^\d{6}$").all()
    # Campaign members are scattered through the id order, not a contiguous block.
    attack = tiny.truth.sort("account_id")["is_attack"].to_numpy()
    both = (attack[1:] & attack[:-1]).mean()
    share = attack.mean()
    assert both < 2 * share**2 + 0.02


def test_tls_fingerprints_look_like_ja4(tiny: SimulatedData) -> None:
    tls = tiny.logs["tls_fingerprint"].unique()
    assert tls.str.contains(r"^t13d\d{4}h[12]_[0-9a-f]{12}_[0-9a-f]{12}$").all()


# --------------------------------------------------------------------------- content


def test_every_population_appears(small: SimulatedData) -> None:
    kinds = set(small.truth["group_kind"])
    assert kinds == BENIGN | ATTACKS
    attack_kinds = set(small.truth.filter(pl.col("is_attack"))["group_kind"])
    assert attack_kinds == ATTACKS
    share = small.truth["is_attack"].mean()
    assert 0.10 <= share <= 0.20


def test_sizes_of_small(small: SimulatedData) -> None:
    assert 19_000 <= small.accounts.height <= 21_000
    assert 700_000 <= small.logs.height <= 1_400_000
    individual = (small.truth["group_kind"] == "individual").mean()
    assert 0.5 <= individual <= 0.62


def test_no_frontier4_before_release(small: SimulatedData) -> None:
    f4 = small.logs.filter(pl.col("model") == "frontier-4")
    assert f4.height > 0
    assert f4["timestamp"].min() >= RELEASE
    assert set(small.logs["model"]) == {
        "frontier-3",
        "frontier-3-mini",
        "frontier-3-reasoning",
        "frontier-4",
    }


def test_benign_early_adopters_exist(small: SimulatedData) -> None:
    day_one = small.logs.filter(
        (pl.col("model") == "frontier-4")
        & (pl.col("timestamp") < datetime(2026, 3, 22, 16, tzinfo=UTC))
    ).join(small.truth, on="account_id")
    assert day_one.filter(~pl.col("is_attack"))["account_id"].n_unique() > 50


def test_window_and_order(tiny: SimulatedData) -> None:
    ts = tiny.logs["timestamp"]
    assert ts.min() >= datetime(2026, 3, 1, tzinfo=UTC)
    assert ts.max() < datetime(2026, 3, 31, tzinfo=UTC)
    resorted = tiny.logs.sort(["timestamp", "account_id"], maintain_order=True)
    assert resorted.equals(tiny.logs)


def test_tables_are_consistent(tiny: SimulatedData) -> None:
    truth_ids = tiny.truth["account_id"]
    assert truth_ids.n_unique() == tiny.truth.height == tiny.accounts.height
    assert set(truth_ids) == set(tiny.accounts["account_id"])
    logged = set(tiny.logs["account_id"].drop_nulls())
    assert logged <= set(tiny.accounts["account_id"])
    assert tiny.accounts["email"].n_unique() == tiny.accounts.height


def test_malformed_rows_are_planted(small: SimulatedData) -> None:
    logs = small.logs
    null_ids = logs["account_id"].null_count()
    first_octet = pl.col("ip").str.extract(r"^(\d+)\.", 1).cast(pl.Int64)
    bad_ip = logs.filter(pl.col("ip").is_in(["unknown", "-"]) | (first_octet > 255))
    total = null_ids + bad_ip.height
    assert 0.0002 * logs.height < total < 0.001 * logs.height
    assert null_ids > 0 and bad_ip.height > 0


def test_ip_text(small: SimulatedData) -> None:
    ips = small.logs["ip"].unique().drop_nulls()
    v6 = ips.filter(ips.str.contains(":"))
    assert len(v6) > 0
    for text in v6.head(50).to_list():
        ipaddress.IPv6Address(text)
    v4 = ips.filter(ips.str.contains(r"^\d+\.\d+\.\d+\.\d+$")).head(200).to_list()
    valid = [t for t in v4 if all(int(o) < 256 for o in t.split("."))]
    for text in valid:
        ipaddress.IPv4Address(text)


def test_prompts(tiny: SimulatedData) -> None:
    prompt = tiny.logs["prompt"]
    assert prompt.str.len_chars().max() <= 300
    assert 0.01 < prompt.null_count() / len(prompt) < 0.06
    assert (tiny.logs["input_tokens"] > 0).all()
    assert (tiny.logs["output_tokens"] > 0).all()


def test_campaign_tactics(small: SimulatedData) -> None:
    logs = small.logs.join(small.truth, on="account_id")
    per = logs.group_by("group_kind").agg(
        (pl.col("ip").n_unique() / pl.col("account_id").n_unique()).alias("ips_per_acct"),
        pl.col("account_id").n_unique().alias("accounts"),
    )
    get = {r["group_kind"]: r for r in per.iter_rows(named=True)}
    # Residential proxies: nearly one address per request.
    resi = logs.filter(pl.col("group_kind") == "residential_proxy")
    assert resi["ip"].n_unique() > 0.9 * resi.height
    # Low and slow: one static address each, few requests.
    slow = (
        logs.filter(pl.col("group_kind") == "low_and_slow")
        .group_by("account_id")
        .agg(pl.col("ip").n_unique().alias("ips"), pl.len().alias("n"))
    )
    assert (slow["ips"] == 1).mean() > 0.95
    assert slow["n"].max() <= 40
    # Hydra: a few hundred proxy exits shared by far more accounts.
    assert get["hydra"]["ips_per_acct"] < 0.5
    # Model pivot: nearly everything after release goes to frontier-4.
    settled = RELEASE + timedelta(days=1)
    pivot = logs.filter((pl.col("group_kind") == "model_pivot") & (pl.col("timestamp") >= settled))
    assert (pivot["model"] == "frontier-4").mean() > 0.85


def test_mixes_change_campaigns() -> None:
    events: list[tuple[str, int, int]] = []
    stealth = generate("tiny", seed=1, mix="stealth", progress=lambda *e: events.append(e))
    assert events[-1] == ("done", 11, 11)
    assert ("simulating low_and_slow", 9, 11) in events
    hydra_only = generate("tiny", seed=1, mix="hydra-only")
    kinds = set(stealth.truth.filter(pl.col("is_attack"))["group_kind"])
    assert kinds == {"residential_proxy", "low_and_slow"}
    assert set(hydra_only.truth.filter(pl.col("is_attack"))["group_kind"]) == {"hydra"}


# --------------------------------------------------------------------------- errors


def test_bad_options_raise_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown scale 'huge'"):
        generate("huge")
    with pytest.raises(InputError, match="unknown mix"):
        generate("tiny", mix="loud")
    with pytest.raises(InputError, match="seed must be"):
        generate("tiny", seed=-1)
    with pytest.raises(InputError, match="unknown format"):
        simulate(tmp_path, scale="tiny", fmt="xlsx")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write to output directory"):
        simulate(blocker, scale="tiny")


# --------------------------------------------------------------------------- value helpers


@given(st.lists(st.integers(0, 2**48 - 1), min_size=1, max_size=20))
def test_hex_strings_round_trip(values: list[int]) -> None:
    text = hex_strings(np.array(values, dtype=np.uint64), 12)
    assert [int(t, 16) for t in text] == values
    assert all(len(t) == 12 for t in text)


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=20))
def test_ipv4_text_round_trip(values: list[int]) -> None:
    text = ipv4_text(np.array(values, dtype=np.int64)).to_list()
    assert [int(ipaddress.IPv4Address(t)) for t in text] == values


# --------------------------------------------------------------------------- CLI


def test_cli_writes_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        simulate_cmd, [str(out), "--scale", "tiny", "--seed", "2", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        str(out / "logs.parquet"),
        str(out / "accounts.parquet"),
        str(out / "truth.parquet"),
    ]
    assert sorted(p.name for p in out.iterdir()) == FILES["parquet"]


def test_cli_csv_summary(tmp_path: Path) -> None:
    result = CliRunner().invoke(simulate_cmd, [str(tmp_path), "--scale", "tiny", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES["csv"]
    assert "hydra" in result.stderr
    assert "accounts" in result.stderr


def test_cli_bad_scale_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(simulate_cmd, [str(tmp_path), "--scale", "huge"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: invalid --scale 'huge': choose one of tiny, sample, small, seed, large"
    ]
    assert not list(tmp_path.iterdir())


def test_cli_unwritable_out_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(simulate_cmd, [str(blocker), "--scale", "tiny"])
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: cannot write to output directory")


def test_cli_help_has_examples() -> None:
    result = CliRunner().invoke(simulate_cmd, ["--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert "tiny|sample|small|seed|large" in result.output
