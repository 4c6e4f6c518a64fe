"""Top-level pytest configuration: hypothesis profiles sized for a loaded 2-core machine."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# DKG-sized examples take tens of milliseconds and a loaded machine makes that jumpy, so the
# deadline is off on purpose; the example counts keep the suite within minutes.
settings.register_profile(
    "default",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
