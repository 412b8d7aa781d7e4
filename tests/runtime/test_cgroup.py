"""cgroup parsing: the real hierarchy of this machine, and folders laid out like cgroupfs for limits we cannot set."""

from pathlib import Path

from pytest_memguard.runtime import cgroup
from pytest_memguard.runtime.units import GB, MB

V1_PROC = """12:memory:/docker/abc
11:cpu,cpuacct:/docker/abc
0::/
"""
V2_PROC = "0::/system.slice/worker.service\n"


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_parse_proc_cgroup_finds_v1_memory_and_v2_paths():
    assert cgroup.parse_proc_cgroup(V1_PROC) == ("/", "/docker/abc")
    assert cgroup.parse_proc_cgroup(V2_PROC) == ("/system.slice/worker.service", None)


def test_v2_limit_usage_peak_and_oom_kills(tmp_path):
    d = _write(
        tmp_path / "unified" / "system.slice" / "worker.service",
        {
            "memory.max": f"{2 * GB}\n",
            "memory.current": f"{300 * MB}\n",
            "memory.peak": f"{1500 * MB}\n",
            "memory.events": "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n",
            "memory.swap.max": "max\n",
        },
    )
    mountinfo = f"30 23 0:26 / {tmp_path / 'unified'} rw - cgroup2 cgroup2 rw\n"
    version, path = cgroup.find_memory_cgroup(V2_PROC, mountinfo)
    assert (version, path) == (2, d)
    figures = cgroup.read_cgroup_memory(path, version)
    assert figures.limit_bytes == 2 * GB
    assert figures.current_bytes == 300 * MB
    assert figures.peak_bytes == 1500 * MB
    assert figures.oom_kill == 1
    assert figures.swap_limit_bytes is None  # "max" means unlimited


def test_v2_max_means_no_limit_and_a_parent_limit_still_applies(tmp_path):
    root = tmp_path / "unified"
    _write(root / "kubepods", {"memory.max": f"{GB}\n"})
    leaf = _write(root / "kubepods" / "pod1", {"memory.max": "max\n", "memory.current": "1024\n"})
    figures = cgroup.read_cgroup_memory(leaf, 2, mount_point=str(root))
    assert figures.limit_bytes == GB


def test_v1_limit_with_unlimited_sentinel_and_oom_control(tmp_path):
    d = _write(
        tmp_path / "memory" / "docker" / "abc",
        {
            "memory.limit_in_bytes": "9223372036854771712\n",
            "memory.usage_in_bytes": f"{100 * MB}\n",
            "memory.max_usage_in_bytes": f"{400 * MB}\n",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        },
    )
    mountinfo = f"40 31 0:30 / {tmp_path / 'memory'} rw,relatime - cgroup cgroup rw,memory\n"
    version, path = cgroup.find_memory_cgroup(V1_PROC, mountinfo)
    assert (version, path) == (1, d)
    figures = cgroup.read_cgroup_memory(path, 1)
    assert figures.limit_bytes is None
    assert figures.peak_bytes == 400 * MB
    assert figures.oom_kill == 3
    (d / "memory.limit_in_bytes").write_text(f"{512 * MB}\n")
    limited = cgroup.read_cgroup_memory(path, 1)
    assert cgroup.effective_limit_bytes(limited, host_total=24 * GB) == 512 * MB
    assert cgroup.effective_limit_bytes(limited, host_total=256 * MB) == 256 * MB


def test_cgroup_namespace_mount_root_maps_to_the_mount_point(tmp_path):
    # Inside a container with its own cgroup namespace /proc/self/cgroup says "/" and the mount is the cgroup.
    d = _write(tmp_path / "cg", {"memory.current": "1\n", "memory.max": "1048576\n"})
    mountinfo = f"50 40 0:27 / {d} rw - cgroup2 cgroup2 rw\n"
    assert cgroup.find_memory_cgroup("0::/\n", mountinfo) == (2, d)


def test_missing_and_garbled_files_are_unknown_not_errors(tmp_path):
    d = _write(tmp_path / "x", {"memory.max": "garbage\n"})
    figures = cgroup.read_cgroup_memory(d, 2)
    assert figures.limit_bytes is None and figures.current_bytes is None and figures.oom_kill is None


def test_the_real_cgroup_of_this_process_reads_consistently():
    figures = cgroup.current_cgroup_memory()
    if figures is None:
        assert not Path("/proc/self/cgroup").exists() or "memory" not in Path("/proc/self/cgroup").read_text()
        return
    assert figures.version in (1, 2)
    assert figures.current_bytes is None or figures.current_bytes > 0
    limit = cgroup.effective_limit_bytes(figures)
    assert limit is not None and limit <= cgroup.host_total_bytes()
