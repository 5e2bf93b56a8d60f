"""Shared test configuration.

Hypothesis runs without its per-example deadline: a deadline is a timing, and
timings belong in benchmarks/, not in tests (a slow CI machine must not fail a
correct property).
"""

from hypothesis import settings

settings.register_profile("secagg", deadline=None)
settings.load_profile("secagg")
