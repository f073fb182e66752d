"""Hypothesis draws the same examples on every machine and every run, so that CI's verdict
does not depend on luck; run with `--hypothesis-profile explore` to search afresh."""

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("ci")
