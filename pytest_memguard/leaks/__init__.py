"""Leak hunting: run a callable again and again, judge the growth robustly, name the lines that grew.

No pytest here; the plugin's ``--hunt-leaks`` wraps :class:`LeakHunter` around a test's call phase (and around
Celery tasks run eagerly), and ``@pytest.mark.max_leak_kb`` uses :meth:`HuntResult.check_limit`.
"""

from .growth import GrowthEstimate, growth_per_run, theil_sen
from .hunter import DEFAULT_RUNS, DEFAULT_WARMUP, HuntResult, HuntSpecError, LeakHunter, hunt, parse_hunt_spec
from .line_profile import ProfileUnavailable, profile_function
from .object_types import TypeGrowth, count_types, type_growth
from .sites import Site, SiteTracker
from .verdict import POLICIES, Verdict, judge

__all__ = [
    "DEFAULT_RUNS",
    "DEFAULT_WARMUP",
    "POLICIES",
    "GrowthEstimate",
    "HuntResult",
    "HuntSpecError",
    "LeakHunter",
    "ProfileUnavailable",
    "Site",
    "SiteTracker",
    "TypeGrowth",
    "Verdict",
    "count_types",
    "growth_per_run",
    "hunt",
    "judge",
    "parse_hunt_spec",
    "profile_function",
    "theil_sen",
    "type_growth",
]
