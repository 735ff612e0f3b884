"""Hypothesis profiles of the fuzz suite: `ci` by default, `long` with FLOWGAUGE_FUZZ_PROFILE=long.

ci: deterministic (`derandomize`: the same examples every run, so a red CI run is reproducible and a green one
stays green for the same code) and sized so the whole suite stays under a minute on a loaded 2-core machine.
long: ten times the examples, randomized (every run explores new inputs), for a run by hand or a nightly job;
`--hypothesis-show-statistics` prints how many examples each target ran. Neither keeps an example database
(`database=None`), so nothing is written under `.hypothesis/`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

CI_EXAMPLES = 60
PROFILES = {"ci": CI_EXAMPLES, "long": 10 * CI_EXAMPLES}
ENV_PROFILE = "FLOWGAUGE_FUZZ_PROFILE"

_common = {
    "database": None,
    "deadline": None,  # two shared cores: one slow example is load, not a bug
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=PROFILES["ci"], derandomize=True, **_common)
settings.register_profile("long", max_examples=PROFILES["long"], derandomize=False, **_common)

profile = os.environ.get(ENV_PROFILE, "ci")
if profile not in PROFILES:
    raise ValueError(f"{ENV_PROFILE} must be one of {', '.join(PROFILES)}, got {profile!r}")
settings.load_profile(profile)


def examples(scale: float = 1.0) -> int:
    """max_examples for a target that is `scale` times as cheap (or, below 1, as dear) as the reference one."""
    return max(1, int(PROFILES[profile] * scale))
