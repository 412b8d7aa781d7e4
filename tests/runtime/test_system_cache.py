"""``recent_system_usage``: the per-line system figures are read at most once per interval."""

from pytest_memguard.runtime.system import recent_system_usage


def test_recent_system_usage_reuses_a_fresh_reading_and_rereads_a_stale_one():
    first = recent_system_usage(max_age_s=60)
    assert recent_system_usage(max_age_s=60) is first  # cached: no psutil/cgroup reads
    again = recent_system_usage(max_age_s=0)
    assert again is not first and set(again) == {"total_mb", "available_mb", "used_percent", "source"}
