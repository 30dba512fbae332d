"""The landing folder scan: identity by content, the date rule, load order, what is refused."""

import hashlib
import os
from datetime import date, datetime, timedelta, timezone

import pytest

from churn_platform.core import landing, settings
from churn_platform.core.errors import InputError

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
CSV = "CustomerID,Churn\nC1,No\n"


def drop(folder, name, text=CSV, arrived=NOW - timedelta(hours=1)):
    path = folder / name
    path.write_text(text)
    os.utime(path, (arrived.timestamp(), arrived.timestamp()))
    return path


def scan(folder, **kwargs):
    return landing.scan(folder, settle_s=kwargs.pop("settle_s", 10), now=NOW, **kwargs)


def test_an_export_is_its_bytes_named_by_date_and_hash(tmp_path):
    drop(tmp_path, "crm_2026-11-27.csv")
    [export] = scan(tmp_path).exports
    sha = hashlib.sha256(CSV.encode()).hexdigest()
    assert export.sha256 == sha
    assert export.partition_key == f"2026-11-27__{sha[:12]}"
    assert landing.parse_partition_key(export.partition_key) == (date(2026, 11, 27), sha[:12])


def test_the_same_bytes_twice_are_one_export_the_earliest_kept(tmp_path):
    drop(tmp_path, "a_2026-11-28.csv")  # same bytes, a later date: a repeat
    drop(tmp_path, "b_2026-11-27.csv", arrived=NOW - timedelta(hours=2))
    drop(tmp_path, "c_2026-11-27.csv", arrived=NOW - timedelta(hours=3))  # the first arrival
    result = scan(tmp_path)
    assert [e.name for e in result.exports] == ["c_2026-11-27.csv"]
    key = result.exports[0].partition_key
    assert sorted((p.name, k) for p, k in result.duplicates) == [
        ("a_2026-11-28.csv", key), ("b_2026-11-27.csv", key)]


def test_changed_bytes_under_the_same_name_are_a_new_export(tmp_path):
    drop(tmp_path, "crm_2026-11-27.csv")
    first = scan(tmp_path).exports[0]
    drop(tmp_path, "crm_2026-11-27.csv", CSV + "C2,Yes\n")
    second = scan(tmp_path).exports[0]
    assert second.partition_key != first.partition_key
    assert landing.new_exports([second], {first.partition_key}) == [second]
    # ... and the unchanged file is known: nothing new.
    assert landing.new_exports([first], {first.partition_key}) == []


def test_an_undated_file_touched_again_is_still_the_same_export(tmp_path):
    path = drop(tmp_path, "crm.csv", arrived=NOW - timedelta(days=2))
    first = scan(tmp_path).exports[0]
    later = NOW - timedelta(hours=1)
    os.utime(path, (later.timestamp(), later.timestamp()))
    again = scan(tmp_path).exports[0]
    assert again.export_date != first.export_date
    assert landing.new_exports([again], {first.partition_key}) == []


def test_the_date_comes_from_the_name_else_from_arrival(tmp_path):
    arrived = datetime(2026, 11, 20, 23, 30, tzinfo=timezone.utc)
    drop(tmp_path, "a_20261101.csv", "a\n", arrived)
    drop(tmp_path, "b_2026-10-02.csv", "b\n", arrived)
    drop(tmp_path, "c_no_date.csv", "c\n", arrived)
    drop(tmp_path, "d_123456789.csv", "d\n", arrived)  # nine digits: not a date
    dates = {e.name: (e.export_date, e.date_source) for e in scan(tmp_path).exports}
    assert dates == {
        "a_20261101.csv": (date(2026, 11, 1), "name"),
        "b_2026-10-02.csv": (date(2026, 10, 2), "name"),
        "c_no_date.csv": (date(2026, 11, 20), "arrival"),  # UTC
        "d_123456789.csv": (date(2026, 11, 20), "arrival"),
    }


def test_a_configured_pattern_replaces_the_default(tmp_path):
    drop(tmp_path, "export-27.11.2026.csv")
    pattern = r"(?P<day>\d{2})\.(?P<month>\d{2})\.(?P<year>\d{4})"
    assert scan(tmp_path, pattern=pattern).exports[0].export_date == date(2026, 11, 27)
    assert scan(tmp_path).exports[0].date_source == "arrival"


@pytest.mark.parametrize("pattern, says", [
    (r"(?P<year>\d{4", "not a regular expression"),
    (r"(?P<year>\d{4})(?P<month>\d{2})", "missing: day"),
])
def test_a_bad_pattern_is_refused_by_name(tmp_path, pattern, says):
    with pytest.raises(InputError, match="CHURN_LANDING_DATE_PATTERN") as error:
        scan(tmp_path, pattern=pattern)
    assert says in error.value.description


def test_a_name_that_says_an_impossible_date_is_refused(tmp_path):
    drop(tmp_path, "crm_2026-13-40.csv")
    result = scan(tmp_path)
    assert result.exports == []
    assert "not a calendar date" in result.refused[0].reason


def test_late_files_load_in_export_date_order_then_arrival(tmp_path):
    drop(tmp_path, "crm_2026-11-03.csv", "3\n", NOW - timedelta(hours=5))
    drop(tmp_path, "crm_2026-11-01.csv", "1\n", NOW - timedelta(hours=1))  # arrived last
    drop(tmp_path, "crm_2026-11-02_b.csv", "2b\n", NOW - timedelta(hours=2))
    drop(tmp_path, "crm_2026-11-02_a.csv", "2a\n", NOW - timedelta(hours=3))
    assert [e.name for e in scan(tmp_path).exports] == [
        "crm_2026-11-01.csv", "crm_2026-11-02_a.csv", "crm_2026-11-02_b.csv",
        "crm_2026-11-03.csv"]


def test_links_fifos_and_other_files_are_not_exports(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = drop(outside, "secret.csv")
    folder = tmp_path / "landing"
    folder.mkdir()
    (folder / "link.csv").symlink_to(secret)
    os.mkfifo(folder / "pipe.csv")  # opening it for reading would block a naive scan
    drop(folder, "notes.txt")
    drop(folder, "upper.CSV", "upper\n")
    drop(folder, ".partial.csv")
    drop(folder, "empty.csv", "")
    (folder / "sub.csv").mkdir()
    result = scan(folder)
    assert [e.name for e in result.exports] == ["upper.CSV"]
    assert {r.path.name: r.reason for r in result.refused} == {
        "link.csv": "a symbolic link: copy the file itself",
        "notes.txt": "not a .csv file",
        "pipe.csv": "not a regular file",
        "empty.csv": "empty: an export has at least a header",
    }


def test_a_symlinked_landing_folder_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(InputError, match="not a directory"):
        scan(tmp_path / "link")


def test_a_file_still_being_written_waits(tmp_path):
    drop(tmp_path, "crm_2026-11-27.csv", arrived=NOW - timedelta(seconds=9))
    drop(tmp_path, "crm_2026-11-26.csv", "x\n", arrived=NOW - timedelta(seconds=11))
    result = scan(tmp_path)
    assert [p.name for p in result.waiting] == ["crm_2026-11-27.csv"]
    assert [e.name for e in result.exports] == ["crm_2026-11-26.csv"]


def test_the_scan_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(landing, "MAX_ENTRIES", 3)
    for i in range(3):
        drop(tmp_path, f"crm_{i}.csv", f"{i}\n")
    assert len(scan(tmp_path).exports) == 3
    drop(tmp_path, "crm_3.csv", "3\n")
    with pytest.raises(InputError, match="more than 3 entries"):
        scan(tmp_path)


def test_the_hash_cache_skips_unchanged_files_and_sees_rewrites(tmp_path):
    path = drop(tmp_path, "crm.csv")
    first = scan(tmp_path)
    fake = {name: (signature, "f" * 64) for name, (signature, _) in first.hashes.items()}
    # An unchanged file is not read again: the cached hash is taken as is.
    assert scan(tmp_path, hashes=fake).exports[0].sha256 == "f" * 64
    # Rewritten with the same size and modification time: ctime betrays it.
    stat = path.stat()
    path.write_text(CSV.replace("No", "Ye"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert scan(tmp_path, hashes=fake).exports[0].sha256 == hashlib.sha256(
        CSV.replace("No", "Ye").encode()).hexdigest()


def test_partition_keys_are_checked():
    with pytest.raises(InputError, match="not an export partition key"):
        landing.parse_partition_key("2026-11-27__../../etc")


def test_landing_mode_refuses_random_pseudonyms(monkeypatch):
    monkeypatch.delenv("CHURN_PSEUDONYMIZATION_KEY", raising=False)
    with pytest.raises(InputError) as error:
        landing.require_stable_pseudonyms()
    assert "CHURN_PSEUDONYMIZATION_KEY" in error.value.description
    assert "openssl rand" in error.value.description
    monkeypatch.setenv("CHURN_PSEUDONYMIZATION_KEY", "k" * 32)
    landing.require_stable_pseudonyms()


@pytest.mark.parametrize("value, expected", [(None, 3), ("1", 1), ("7", 7)])
def test_the_missing_exports_setting(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CHURN_MISSING_EXPORTS_FOR_CHURN", raising=False)
    else:
        monkeypatch.setenv("CHURN_MISSING_EXPORTS_FOR_CHURN", value)
    assert settings.missing_exports_for_churn() == expected


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_missing_exports_setting_is_named(monkeypatch, value):
    monkeypatch.setenv("CHURN_MISSING_EXPORTS_FOR_CHURN", value)
    with pytest.raises(InputError, match="CHURN_MISSING_EXPORTS_FOR_CHURN must be a whole number"):
        settings.missing_exports_for_churn()


# --- rules stated for mutation testing (docs/mutation-testing.md) -----------------------------


def test_a_name_whose_date_is_not_a_calendar_date_is_refused_quoting_the_whole_match(tmp_path):
    drop(tmp_path, "crm_20261399.csv")
    drop(tmp_path, "crm_z_2026-11-27.csv")  # after it in name order: still scanned
    found = scan(tmp_path)
    assert [e.name for e in found.exports] == ["crm_z_2026-11-27.csv"]
    [refused] = found.refused
    assert refused.path == tmp_path / "crm_20261399.csv"
    assert refused.reason == (
        "landing file crm_20261399.csv: '20261399' in its name is not a calendar date; rename"
        f" the file or change {settings.LANDING_DATE_PATTERN_ENV}")


def test_a_date_pattern_missing_groups_names_each_missing_group():
    with pytest.raises(InputError) as raised:
        landing.date_pattern(r"(?P<year>\d{4})")
    assert str(raised.value).endswith("; missing: day, month")


def test_the_settle_time_is_a_strict_bound_and_a_waiting_file_holds_back_no_other(tmp_path):
    arrived = datetime(2026, 11, 29, 11, 59, 50, tzinfo=timezone.utc)  # exactly 10 s before NOW
    drop(tmp_path, "a_2026-11-01.csv", "CustomerID\nA\n", arrived=arrived)
    drop(tmp_path, "b_2026-11-02.csv", "CustomerID\nB\n")
    assert [e.name for e in scan(tmp_path, settle_s=10).exports] == [
        "a_2026-11-01.csv", "b_2026-11-02.csv"]
    waiting = scan(tmp_path, settle_s=10.5)
    assert [p.name for p in waiting.waiting] == ["a_2026-11-01.csv"]
    assert [e.name for e in waiting.exports] == ["b_2026-11-02.csv"]


def test_without_a_settle_time_the_setting_is_read(tmp_path, monkeypatch):
    drop(tmp_path, "a_2026-11-01.csv", arrived=NOW - timedelta(seconds=30))
    monkeypatch.setenv("CHURN_LANDING_SETTLE_SECONDS", "60")
    found = landing.scan(tmp_path, now=NOW)
    assert [p.name for p in found.waiting] == ["a_2026-11-01.csv"] and found.exports == []
    monkeypatch.setenv("CHURN_LANDING_SETTLE_SECONDS", "20")
    assert [e.name for e in landing.scan(tmp_path, now=NOW).exports] == ["a_2026-11-01.csv"]


def test_a_link_to_a_folder_is_refused_as_a_link_not_skipped_as_a_folder(tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    (tmp_path / "elsewhere.csv").mkdir()
    (folder / "elsewhere.csv").symlink_to(tmp_path / "elsewhere.csv")
    (folder / "sub").mkdir()
    found = scan(folder)
    assert [(r.path.name, r.reason) for r in found.refused] == [
        ("elsewhere.csv", "a symbolic link: copy the file itself")]


def test_a_landing_folder_that_is_not_a_directory_or_too_full_is_refused(tmp_path, monkeypatch):
    with pytest.raises(InputError) as raised:
        scan(tmp_path / "none")
    assert str(raised.value) == (
        f"landing folder {tmp_path / 'none'} ({settings.LANDING_DIR_ENV}) is not a directory"
        " (a symbolic link is not taken either)")
    monkeypatch.setattr(landing, "MAX_ENTRIES", 2)
    for name in ("a.csv", "b.csv"):
        drop(tmp_path, name, f"CustomerID\n{name}\n")
    assert len(scan(tmp_path).exports) == 2  # exactly the most: still scanned
    drop(tmp_path, "c.txt")
    with pytest.raises(InputError) as raised:
        scan(tmp_path)
    assert str(raised.value) == (
        f"landing folder {tmp_path} holds more than 2 entries: move loaded exports elsewhere"
        " (they stay in staging), then the scan resumes")


def test_reading_a_hash_follows_no_link_and_waits_on_no_fifo(tmp_path):
    target = drop(tmp_path, "real.csv")
    (tmp_path / "link.csv").symlink_to(target)
    with pytest.raises(OSError) as raised:
        landing._read_hash(tmp_path / "link.csv")
    assert raised.value.errno == 40  # ELOOP: O_NOFOLLOW refused the link
    os.mkfifo(tmp_path / "pipe.csv")
    with pytest.raises(ValueError) as raised:  # opened without blocking, then refused
        landing._read_hash(tmp_path / "pipe.csv")
    assert str(raised.value) == "not a regular file"
    assert landing._read_hash(target)[0] == hashlib.sha256(CSV.encode()).hexdigest()


def test_an_export_is_located_by_content_with_the_scans_own_pattern(tmp_path):
    pattern = r"(?P<day>\d{2})\.(?P<month>\d{2})\.(?P<year>\d{4})"
    drop(tmp_path, "x_20261399_01.02.2026.csv", "CustomerID\nX\n")  # the default: no date
    path = drop(tmp_path, "y.csv", "CustomerID\nY\n", arrived=datetime.now(timezone.utc))
    [first, second] = landing.scan(tmp_path, pattern=pattern, settle_s=0).exports
    assert first.export_date == date(2026, 2, 1)
    assert landing.locate(tmp_path, first.partition_key, pattern=pattern) == first
    assert landing.locate(tmp_path, second.partition_key, pattern=pattern).path == path
    path.write_text("CustomerID\nchanged\n")
    with pytest.raises(InputError) as raised:
        landing.locate(tmp_path, second.partition_key, pattern=pattern)
    assert str(raised.value) == (
        f"export {second.partition_key}: no file in the landing folder {tmp_path} holds its"
        " content any more (changed or removed since it was registered); a changed file is"
        " registered as a new export")
    with pytest.raises(InputError, match="not an export partition key"):
        landing.locate(tmp_path, "y.csv", pattern=pattern)


def test_without_a_key_landing_mode_says_why_and_how_to_set_one(monkeypatch):
    monkeypatch.delenv(settings.PSEUDONYMIZATION_KEY_ENV, raising=False)
    with pytest.raises(InputError) as raised:
        landing.require_stable_pseudonyms()
    key = settings.PSEUDONYMIZATION_KEY_ENV
    assert str(raised.value) == (
        f"landing-folder mode ({settings.LANDING_DIR_ENV}) builds customer history across"
        " exports, which needs the same pseudonym for a customer in every export; without"
        f" {key} each run draws random pseudonyms and no export would join the last. Set {key}"
        " to a long random secret (e.g. `openssl rand -hex 32`) kept outside the repository,"
        " and keep it: changing it starts history over")
    monkeypatch.setenv(key, "k" * 32)
    landing.require_stable_pseudonyms()


def test_a_file_that_fails_while_hashed_waits_or_is_refused_and_the_scan_goes_on(tmp_path,
                                                                                monkeypatch):
    """The faults of reading a file that passed the scan's checks (a race with its writer, a
    disk error) cannot be staged for real here: `_read_hash` raises them for chosen names."""
    faults = {"b.csv": BlockingIOError("changed while being read"),
              "c.csv": OSError(5, "Input/output error"),
              "d.csv": ValueError("not a regular file"),
              "e.csv": OSError("no errno")}
    real = landing._read_hash

    def read_hash(path):
        if path.name in faults:
            raise faults[path.name]
        return real(path)

    monkeypatch.setattr(landing, "_read_hash", read_hash)
    for name in ("a.csv", "b.csv", "c.csv", "d.csv", "e.csv", "f.csv"):
        drop(tmp_path, name, f"CustomerID\n{name}\n")
    found = scan(tmp_path)
    assert found.waiting == [tmp_path / "b.csv"]
    assert [(r.path, r.reason) for r in found.refused] == [
        (tmp_path / "c.csv", "cannot be read: Input/output error"),
        (tmp_path / "d.csv", "cannot be read: not a regular file"),
        (tmp_path / "e.csv", "cannot be read: no errno")]
    assert [e.name for e in found.exports] == ["a.csv", "f.csv"]


def test_a_later_copy_of_an_export_is_a_duplicate_of_the_first_and_sizes_are_the_files(tmp_path):
    drop(tmp_path, "a_2026-11-01.csv", "CustomerID\nA1\n")
    drop(tmp_path, "b_2026-11-01.csv", "CustomerID\nA1\n")
    found = scan(tmp_path)
    [export] = found.exports
    assert export.name == "a_2026-11-01.csv" and export.size == len("CustomerID\nA1\n")
    assert found.duplicates == [(tmp_path / "b_2026-11-01.csv", export.partition_key)]
