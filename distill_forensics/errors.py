"""Exception types and the exit codes the CLI maps them to."""

from __future__ import annotations

# Exit codes (documented in the README).
EXIT_OK = 0
EXIT_FINDINGS = 1  # --fail-on-findings and suspected clusters were found
EXIT_INPUT = 2  # bad input: missing column, unreadable file, bad mapping, bad option
EXIT_INTERNAL = 3  # unexpected internal error


class DistillForensicsError(Exception):
    """Base class of every error the library raises on purpose."""

    exit_code = EXIT_INTERNAL


class InputError(DistillForensicsError):
    """The input cannot be used as given; the message says where and how to fix it."""

    exit_code = EXIT_INPUT
