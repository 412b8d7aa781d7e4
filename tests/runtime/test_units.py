import pytest

from pytest_memguard.runtime.units import MB, SizeError, format_mb, parse_size, parse_size_mb


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24 MB", 24 * MB),
        ("1.5GiB", int(1.5 * 1024 * MB)),
        ("512KiB", 512 * 1024),
        ("4G", 4096 * MB),
        ("4096M", 4096 * MB),
        ("100", 100 * MB),
        (" 7 mb ", 7 * MB),
        ("10B", 10),
        (".5G", 512 * MB),
        (200, 200 * MB),
        (0.5, MB // 2),
    ],
)
def test_parse_size_accepts_the_spellings_users_write(text, expected):
    assert parse_size(text) == expected


def test_default_unit_applies_to_bare_numbers_only():
    assert parse_size("3", default_unit="KB") == 3 * 1024
    assert parse_size("3MB", default_unit="KB") == 3 * MB
    assert parse_size_mb("1GiB") == 1024.0


@pytest.mark.parametrize("bad", ["", "MB", "12 parsecs", "-5MB", "1.2.3G", -1, True, None, [1]])
def test_bad_sizes_raise_an_error_that_names_the_value(bad):
    with pytest.raises(SizeError) as info:
        parse_size(bad, what="--memory-budget")
    assert "--memory-budget" in str(info.value)


def test_format_mb_matches_the_seed_log_format():
    assert format_mb(512.66) == "512.7MB"
    assert format_mb(125.44, signed=True) == "+125.4MB"
    assert format_mb(-3.0, signed=True) == "-3.0MB"
    assert format_mb(None) == "?MB"
