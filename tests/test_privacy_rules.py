"""The personal-data rules with plain data: what is old, what an old position becomes, what
erasure does to each table, and the template keyring (rotation without re-enrolment)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h3
import numpy as np
import pytest

from processors.erasure import (
    ERASED,
    NOT_PERSONAL,
    PLAN,
    Action,
    check_nip,
    names_nip,
    redact_others,
    unpaid_months,
)
from processors.replay_index import ReplayIndex
from processors.retention import (
    DAY_MS,
    PrivacyPolicy,
    cell_centre,
    coarsened,
    cutoff,
    is_coarse,
    is_old,
    retention_ms,
    sighted_before,
    topic_changes,
)
from processors.templates import (
    Keyring,
    Template,
    TemplateCipher,
    TemplateError,
    UnknownKey,
    key_id,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NIP = "198001012005011001"
OTHER = "199002022015022002"
SQL = Path(__file__).resolve().parent.parent / "sinks" / "sql"


# --- retention ------------------------------------------------------------------------------


def test_old_means_older_than_the_window() -> None:
    assert cutoff(NOW, 90) == NOW - timedelta(days=90)
    assert is_old(NOW - timedelta(days=90, seconds=1), NOW, 90)
    assert not is_old(NOW - timedelta(days=90), NOW, 90)
    assert not is_old(NOW - timedelta(days=3), NOW, 90)
    with pytest.raises(ValueError, match="time zone"):
        cutoff(NOW.replace(tzinfo=None), 90)


def test_policy_refuses_unusable_windows() -> None:
    assert PrivacyPolicy().coordinates_days == 90 and PrivacyPolicy().selfies_days == 30
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="whole number of days"):
            PrivacyPolicy(coordinates_days=bad)  # type: ignore[arg-type]
    assert retention_ms(30) == 30 * DAY_MS == 2_592_000_000


def test_an_old_position_becomes_its_cells_centre() -> None:
    lat, lon = -2.48612, 106.41021
    cell = h3.latlng_to_cell(lat, lon, 10)
    centre = coarsened(lat, lon, cell, 10)
    assert centre == h3.cell_to_latlng(cell) and centre != (lat, lon)
    assert h3.latlng_to_cell(*centre, 10) == cell  # still in the same cell: heatmaps unchanged
    assert not is_coarse(lat, lon, centre) and is_coarse(*centre, centre)
    # coarsening is idempotent
    assert coarsened(*centre, cell, 10) == centre


def test_without_a_usable_cell_the_position_itself_is_coarsened_or_dropped() -> None:
    lat, lon = -2.48612, 106.41021
    assert cell_centre("") is None and cell_centre("not-a-cell") is None
    assert coarsened(lat, lon, "", 10) == h3.cell_to_latlng(h3.latlng_to_cell(lat, lon, 10))
    for bad in ((float("nan"), 1.0), (91.0, 0.0), (0.0, 0.0)):
        assert coarsened(*bad, "", 10) == (0.0, 0.0)


def test_topic_retention_changes_only_what_differs_and_exists() -> None:
    wanted = {"raw": retention_ms(30), "dlq": retention_ms(30), "gone": retention_ms(30)}
    current: dict[str, int | None] = {"raw": retention_ms(7), "dlq": retention_ms(30),
                                      "gone": None}
    assert topic_changes(current, wanted) == {"raw": retention_ms(30)}
    assert topic_changes({**current, "raw": retention_ms(30)}, wanted) == {}


# --- erasure --------------------------------------------------------------------------------


def _tables_with_nip() -> set[str]:
    """Every ClickHouse table the migrations create with a ``nip`` column."""
    text = "\n".join(p.read_text() for p in sorted(SQL.glob("*.sql")))
    tables = re.findall(r"CREATE TABLE IF NOT EXISTS \{db\}\.(\w+) \((.*?)\) ENGINE", text,
                        re.S)
    return {name for name, body in tables if re.search(r"^\s*nip String", body, re.M)}


def test_the_plan_covers_every_table_that_holds_a_nip() -> None:
    planned = {p.table for p in PLAN}
    assert _tables_with_nip() <= planned
    assert not planned & set(NOT_PERSONAL)
    kept = {p.table for p in PLAN if p.action is Action.KEEP}
    # only the paid TPP lines keep the NIP; the access log keeps its entries without it
    assert kept == {"tpp_closed", "access_log"}
    assert "nip" in next(p for p in PLAN if p.table == "access_log").scrub
    assert all(p.why for p in PLAN)


def test_a_nip_is_18_digits() -> None:
    assert check_nip(NIP) == NIP
    for bad in ("", "1980", NIP + "1", "19800101200501100x", f" {NIP}"):
        with pytest.raises(ValueError, match="not a NIP"):
            check_nip(bad)


def test_selfie_index_entries_are_matched_on_their_nip_only() -> None:
    assert names_nip(f"e-1 {NIP} 1796000000000", NIP)
    assert not names_nip(f"e-1 {OTHER} 1796000000000", NIP)
    assert not names_nip(f"{NIP} {OTHER} 1796000000000", NIP)  # an event id like the NIP
    assert not names_nip(NIP, NIP)
    assert not names_nip(f"e-1 {NIP}", NIP)  # not an entry at all


def test_selfie_fingerprints_leave_with_their_window() -> None:
    assert sighted_before(f"e-1 {NIP} 1000", 1001)
    assert not sighted_before(f"e-1 {NIP} 1001", 1001)
    assert sighted_before("garbage", 1001)  # nothing can use it


def test_open_months_with_attendance_block_erasure() -> None:
    assert unpaid_months({"2026-03", "2026-04"}, {"2026-03"}) == ["2026-04"]
    assert unpaid_months({"2026-03"}, {"2026-03", "2026-05"}) == []


def test_an_export_names_nobody_else() -> None:
    text = f'{{"other_nips": ["{OTHER}"], "nip": "{NIP}", "id": "1{NIP}"}}'
    out = redact_others(text, NIP)
    assert OTHER not in out and f'"nip": "{NIP}"' in out
    assert f"1{NIP}" in out  # 19 digits: not a NIP, left alone
    assert ERASED not in NIP


def test_the_replay_index_forgets_an_erased_hash() -> None:
    index = ReplayIndex(8)
    index.learn("00000000000000ff", f"e-1 {NIP} 1796000000000")
    assert index.check_and_add("00000000000000fe", "e-2", OTHER, 1796000000000) is not None
    index.forget("00000000000000ff")
    index.forget("00000000000000ff")  # twice is fine
    assert "00000000000000ff" not in index.first
    # what is left still works: e-2's own hash is known, the erased one is not
    found = index.check_and_add("00000000000000fc", "e-3", OTHER, 1796000000000)
    assert found is not None and found.evidence["original_event_id"] == "e-2"


# --- template keys --------------------------------------------------------------------------


PACK = "default:test"


def _template() -> Template:
    v = np.random.default_rng(1).normal(size=128).astype(np.float32)
    return Template(v / np.linalg.norm(v), PACK, 1)


def test_a_sealed_template_names_its_key_and_opens_after_rotation() -> None:
    old, new = bytes(range(32)), bytes(range(1, 33))
    template = _template()
    blob = TemplateCipher(old, PACK).seal(template, NIP)
    assert TemplateCipher.sealed_with(blob) == (PACK, key_id(old))

    rotated = TemplateCipher(Keyring.of(new, old), PACK)
    np.testing.assert_array_equal(rotated.open(blob, NIP).embedding, template.embedding)
    again = rotated.reseal(blob, NIP)
    assert again is not None and TemplateCipher.sealed_with(again)[1] == key_id(new)
    assert rotated.reseal(again, NIP) is None  # already under the current key
    # once the old key is retired, only the re-sealed blob opens
    retired = TemplateCipher(new, PACK)
    np.testing.assert_array_equal(retired.open(again, NIP).embedding, template.embedding)
    with pytest.raises(UnknownKey, match="not on this keyring"):
        retired.open(blob, NIP)
    # the key id is authenticated: naming another key breaks the blob
    head = len(rotated._pack_header) + 1
    forged = blob[:head] + key_id(new).encode() + blob[head + 12:]
    with pytest.raises(TemplateError, match="wrong key"):
        rotated.open(forged, NIP)
    assert old.hex() not in repr(rotated) and new.hex() not in repr(rotated.keyring)


def test_a_keyring_is_checked_when_it_is_built() -> None:
    key = bytes(32)
    with pytest.raises(ValueError, match="not on the keyring"):
        Keyring("nope", {key_id(key): key})
    with pytest.raises(ValueError, match="not that key's id"):
        Keyring("k", {"k": key})
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        Keyring.of(b"short")
    assert key_id(key) != key_id(bytes(31) + b"\1") and len(key_id(key)) == 12


def test_the_local_keyring_rotates_and_keeps_older_keys(tmp_path: Path) -> None:
    from hadir.config import load
    from hadir.faces import rotate_template_key, template_key, template_keyring

    settings = load(env={"HADIR_INFRA_HOME": str(tmp_path)})
    first = template_keyring(settings)
    assert len(first.keys) == 1 and template_key(settings) == first.keys[first.current]
    second = rotate_template_key(settings)
    assert second.current != first.current and set(first.keys) < set(second.keys)
    assert template_key(settings) == second.keys[second.current]
    assert (tmp_path / "secrets" / "template-keys").stat().st_mode & 0o777 == 0o600
    assert template_keyring(settings).current == second.current  # read back from the file

    configured = load(env={"HADIR_INFRA_HOME": str(tmp_path),
                           "HADIR_SECURITY_TEMPLATE_KEY_HEX": "11" * 32,
                           "HADIR_SECURITY_TEMPLATE_OLD_KEYS_HEX": f"{'22' * 32}"})
    ring = template_keyring(configured)
    assert ring.current == key_id(bytes.fromhex("11" * 32)) and len(ring.keys) == 2
    from hadir.config import ConfigError

    with pytest.raises(ConfigError, match="rotate it there"):
        rotate_template_key(configured)
    with pytest.raises(ConfigError, match="set with template_key_hex"):
        load(env={"HADIR_SECURITY_TEMPLATE_OLD_KEYS_HEX": "22" * 32})
