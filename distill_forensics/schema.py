"""The canonical schema every input is read into, whatever its source column names.

Log rows are API requests; account rows are sign-up records joined onto them by
``account_id``. Columns other than ``REQUIRED`` are optional: a stage that needs
one checks ``Source.columns`` and explains what it skipped when it is absent.
"""

from __future__ import annotations

import polars as pl

TIMESTAMP_DTYPE = pl.Datetime("us", "UTC")

LOG_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": TIMESTAMP_DTYPE,
    "account_id": pl.String(),
    "org_id": pl.String(),
    "api_key_id": pl.String(),
    "ip": pl.String(),
    "user_agent": pl.String(),
    "tls_fingerprint": pl.String(),
    "model": pl.String(),
    "input_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "prompt": pl.String(),
}

ACCOUNT_SCHEMA: dict[str, pl.DataType] = {
    "account_id": pl.String(),
    "created_at": TIMESTAMP_DTYPE,
    "email": pl.String(),
    "payment_fingerprint": pl.String(),
    "card_bin": pl.String(),
    "billing_country": pl.String(),
    "signup_ip": pl.String(),
}

LOG_COLUMNS: tuple[str, ...] = tuple(LOG_SCHEMA)
ACCOUNT_COLUMNS: tuple[str, ...] = tuple(ACCOUNT_SCHEMA)

# Every canonical column, logs first, in the order frames are laid out.
SCHEMA: dict[str, pl.DataType] = {**LOG_SCHEMA, **ACCOUNT_SCHEMA}
ALL_COLUMNS: tuple[str, ...] = tuple(SCHEMA)

REQUIRED: tuple[str, ...] = ("timestamp", "account_id")

TIMESTAMP_COLUMNS: tuple[str, ...] = ("timestamp", "created_at")
TOKEN_COLUMNS: tuple[str, ...] = ("input_tokens", "output_tokens")
IP_COLUMNS: tuple[str, ...] = ("ip", "signup_ip")

# Row-quality columns that read.read_logs adds next to the canonical ones.
BAD = "_bad"  # String: why the row cannot be used, null when usable
IP_INVALID = "_ip_invalid"  # Boolean: `ip` held text that is not an IP address
TOKENS_INVALID = "_tokens_invalid"  # Boolean: a token count was negative or not a number
EXTRA_CELLS = "_extra_cells"  # Boolean: a CSV row had more cells than its header
MISSING_CELLS = "_missing_cells"  # Boolean: a CSV row had fewer cells than its header
UTF8_INVALID = "_utf8_invalid"  # Boolean: text read held bytes that are not UTF-8

ROW_FLAGS: dict[str, str] = {
    "invalid_ip": IP_INVALID,
    "invalid_tokens": TOKENS_INVALID,
    "extra_cells": EXTRA_CELLS,
    "missing_cells": MISSING_CELLS,
    "invalid_utf8": UTF8_INVALID,
}
"""Malformed-row reasons that keep the row, and the Boolean column marking each."""
