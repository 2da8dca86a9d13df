"""People acting on what Hadir found, against the real stack, workers and gateway: reviewer
decisions and the TPP report, appeals and excuse requests from the phone, closed months, dead
letters that get a verdict and can be sent again."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests

from hadir import deadletters, devices, reports, review, topics, workers
from hadir.infra.process import wait_until
from hadir.phone import Phone, gateway_url
from processors.review import Decision, DecisionKind, ReviewError, standing
from tests.paths import FACES
from tests.pipeline_helpers import Pipeline, new_office, selfie, wib, working_days

pytestmark = pytest.mark.infra

ME = FACES / "img1.jpg"
ME_AGAIN = FACES / "img2.jpg"


@pytest.fixture(scope="module")
def pipe(stack) -> Iterator[Pipeline]:  # type: ignore[no-untyped-def]
    p = Pipeline(stack)
    workers.start(stack, intake=1)

    def up() -> bool:
        try:
            return requests.get(gateway_url(stack) + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    assert wait_until(up, 120), "the gateway did not start"
    yield p
    p.close()


def _day(pipe: Pipeline, nip: str, day: date, with_selfie: bool) -> list[str]:
    """An IN at 07:20 and an OUT at 16:40 WIB: both accepted with a selfie, both rejected
    (NO_SELFIE) without."""
    records = [pipe.checkin(nip, at=wib(day, h, m), kind=kind,
                            selfie=selfie(ME_AGAIN) if with_selfie else None)
               for h, m, kind in ((7, 20, "IN"), (16, 40, "OUT"))]
    pipe.submit(*records)
    return [str(r["event_id"]) for r in records]


def _line(pipe: Pipeline, month: date, nip: str) -> reports.TppResult:
    [result] = reports.tpp(pipe.settings, month, store=False, nip=nip)
    return result


def _decision(event_id: str, kind: DecisionKind, at: datetime) -> Decision:
    return Decision(str(uuid.uuid4()), event_id, "", kind, "Inspektorat", "", at)


def test_a_decision_changes_exactly_its_day(pipe: Pipeline) -> None:
    month = date(2031, 3, 1)
    first, second = working_days(pipe, month, 2)
    nip = pipe.employee(photo=ME, office_id=new_office(pipe, "REV"))
    ids = _day(pipe, nip, first, True) + _day(pipe, nip, second, False)
    found = pipe.verdicts(ids)
    assert [found[e]["verdict"] for e in ids] == ["ACCEPTED", "ACCEPTED", "REJECTED",
                                                  "REJECTED"]
    before = _line(pipe, month, nip)
    assert before.line.tk_days >= 1
    # a rejection nobody appealed is not in the queue
    assert all(r["nip"] != nip for r in review.queue(pipe.settings, rule="NO_SELFIE"))
    for e in ids[2:]:  # a reviewer clears the second day (the selfie upload failed, say)
        review.decide(pipe.settings, e, DecisionKind.CLEAR, "Inspektorat", "foto gagal unggah")
    after = _line(pipe, month, nip)
    changed = [(b.date, a.tk, a.present) for b, a in zip(before.days, after.days, strict=True)
               if b != a]
    assert changed == [(second, False, True)]
    assert after.line.tk_days == before.line.tk_days - 1
    assert after.line.tpp_cut_idr < before.line.tpp_cut_idr
    history = review.history(pipe.settings, ids[2])
    assert [h["decision"] for h in history] == ["CLEAR"] and history[0]["note"]


def test_the_newest_decision_stands_whatever_order_they_arrive_in(pipe: Pipeline) -> None:
    month = date(2031, 4, 1)
    [day] = working_days(pipe, month, 1)
    nip = pipe.employee(photo=ME, office_id=new_office(pipe, "REV"))
    ids = _day(pipe, nip, day, False)
    pipe.verdicts(ids)
    t = datetime.now(UTC)
    newer = [_decision(e, DecisionKind.CONFIRM, t + timedelta(minutes=5)) for e in ids]
    older = [_decision(e, DecisionKind.CLEAR, t) for e in ids]
    assert review.publish_decisions(pipe.settings, newer) == (2, [])
    assert review.publish_decisions(pipe.settings, older) == (2, [])  # arrives last
    assert review.publish_decisions(pipe.settings, older) == (0, [])  # already stored
    assert _line(pipe, month, nip).days[day.day - 1].tk  # CONFIRM stands: still absent
    status = pipe.rows("SELECT decision, counted FROM v_checkin_status WHERE event_id = %(e)s",
                       {"e": ids[0]})
    assert status == [("CONFIRM", 0)]


def test_a_closed_month_refuses_changes_and_its_report_stays_as_paid(pipe: Pipeline) -> None:
    month = date(2031, 5, 1)
    [day] = working_days(pipe, month, 1)
    office = new_office(pipe, "REV")
    nip = pipe.employee(photo=ME, office_id=office)
    ids = _day(pipe, nip, day, False)
    pipe.verdicts(ids)

    def paid() -> list[dict[str, Any]]:
        return [r.as_row() for r in reports.tpp(pipe.settings, month, office=office)]

    before = paid()
    review.set_month(pipe.settings, month, True, "BKPSDM")
    with pytest.raises(ReviewError, match="would change 2031-05, a closed month"):
        review.decide(pipe.settings, ids[0], DecisionKind.CLEAR, "Inspektorat")
    with pytest.raises(ReviewError, match="already closed"):
        review.set_month(pipe.settings, month, True, "BKPSDM")
    # a decision that reaches Kafka some other way, or a late check-in, does not change what
    # was paid either
    decision_id = str(uuid.uuid4())
    pipe.publish(topics.DECISIONS, ids[0], {
        "decision_id": decision_id, "event_id": ids[0], "nip": nip, "decision": "CLEAR",
        "reviewer": "x", "note": "", "decided_at": datetime.now(UTC)})
    late = pipe.checkin(nip, at=wib(day, 7, 25), selfie=selfie(ME_AGAIN))
    pipe.submit(late)
    assert pipe.verdicts([str(late["event_id"])])
    assert wait_until(lambda: pipe.rows("SELECT 1 FROM decisions WHERE decision_id = %(d)s",
                                        {"d": decision_id}) != [], 30)
    assert paid() == before
    review.set_month(pipe.settings, month, False, "BKPSDM")
    assert wait_until(lambda: paid() != before, 30)  # reopened: the report is live again


def test_an_approved_sick_request_from_the_phone_excuses_a_tk_day(pipe: Pipeline) -> None:
    month = date(2031, 6, 1)
    first, second = working_days(pipe, month, 2)
    nip = pipe.employee(photo=ME, office_id=new_office(pipe, "REV"))
    pipe.verdicts(_day(pipe, nip, first, True))  # present on the first day, absent after
    assert _line(pipe, month, nip).days[second.day - 1].tk
    phone = Phone(nip, "android-sick")
    code = devices.issue_codes(pipe.settings, [nip])[0]["code"]
    r = requests.post(gateway_url(pipe.settings) + "/v1/devices",
                      data=phone.registration(code), timeout=10)
    phone.key_id = r.json()["key_id"]
    request_id = str(uuid.uuid4())
    body = json.dumps({"request_id": request_id, "kind": "SAKIT",
                       "date_from": second.isoformat(), "date_to": second.isoformat(),
                       "note": "demam"}).encode()
    for expected in (202, 200):
        r = requests.post(gateway_url(pipe.settings) + "/v1/excuse-requests", data=body,
                          headers=phone.headers("POST", "/v1/excuse-requests", body), timeout=10)
        assert r.status_code == expected, r.text
    bad = json.dumps({"request_id": str(uuid.uuid4()), "kind": "SAKIT",
                      "date_from": second.isoformat(),
                      "date_to": (second - timedelta(days=1)).isoformat()}).encode()
    r = requests.post(gateway_url(pipe.settings) + "/v1/excuse-requests", data=bad,
                      headers=phone.headers("POST", "/v1/excuse-requests", bad), timeout=10)
    assert r.status_code == 400
    assert wait_until(lambda: any(q["request_id"] == request_id for q in review.requests(
        pipe.settings)), 30)
    assert review.decide_excuse(pipe.settings, request_id, True, "Kepala Dinas")["status"] == \
        "APPROVED"
    assert wait_until(lambda: _line(pipe, month, nip).days[second.day - 1].excuse is not None,
                      30)
    day = _line(pipe, month, nip).days[second.day - 1]
    assert not day.tk and day.excuse is not None and day.excuse.value == "SAKIT"
    path = f"/v1/me?month={month:%Y-%m}"
    me = requests.get(gateway_url(pipe.settings) + path, headers=phone.headers("GET", path),
                      timeout=30).json()
    assert me["requests"][0]["status"] == "APPROVED"
    assert me["days"][second.day - 1]["excuse"] == "SAKIT"
    assert me["tpp"]["nip"] == nip


def test_appeals_reach_the_queue_and_only_for_ones_own_check_in(pipe: Pipeline) -> None:
    month = date(2031, 7, 1)
    [day] = working_days(pipe, month, 1)
    nip, other = (pipe.employee(photo=ME, office_id=new_office(pipe, "REV")) for _ in range(2))
    ids = _day(pipe, nip, day, False)
    pipe.verdicts(ids)
    phones = {}
    for who in (nip, other):
        phones[who] = Phone(who, f"android-{who[-4:]}")
        code = devices.issue_codes(pipe.settings, [who])[0]["code"]
        phones[who].key_id = requests.post(gateway_url(pipe.settings) + "/v1/devices",
                                           data=phones[who].registration(code),
                                           timeout=10).json()["key_id"]

    def appeal(phone: Phone, event_id: str) -> requests.Response:
        body = json.dumps({"appeal_id": str(uuid.uuid4()), "event_id": event_id,
                           "note": "saya hadir"}).encode()
        return requests.post(gateway_url(pipe.settings) + "/v1/appeals", data=body,
                             headers=phone.headers("POST", "/v1/appeals", body), timeout=10)

    assert appeal(phones[other], ids[0]).status_code == 403
    assert appeal(phones[nip], str(uuid.uuid4())).status_code == 404
    assert appeal(phones[nip], ids[0]).status_code == 202

    def queued() -> list[dict[str, Any]]:
        return [q for q in review.queue(pipe.settings) if q["event_id"] in ids]

    assert wait_until(lambda: len(queued()) == 1, 30)
    [item] = queued()
    assert item["appeal"] == "saya hadir" and "NO_SELFIE" in item["evidence"]
    review.decide(pipe.settings, ids[0], DecisionKind.CLEAR, "Inspektorat")
    assert queued() == []
    path = f"/v1/checkins/{ids[0]}"  # what the phone shows now
    seen = requests.get(gateway_url(pipe.settings) + path,
                        headers=phones[nip].headers("GET", path), timeout=10).json()
    assert (seen["status"], seen["decision"]) == ("REJECTED", "CLEAR")
    assert "sah" in seen["message"] and "banding" not in seen["message"]


def test_a_dead_lettered_check_in_gets_a_verdict_and_can_be_sent_again(pipe: Pipeline) -> None:
    nip = pipe.employee(photo=ME)
    record = pipe.checkin(nip, selfie=b"\xff\xd8\xff not really a jpeg")
    pipe.submit(record)
    event_id = str(record["event_id"])
    v = pipe.verdicts([event_id])[event_id]
    assert v["verdict"] == "REJECTED" and v["reasons"] == ["INVALID_INPUT"]
    assert "selfie" in pipe.alerts(event_id)["INVALID_INPUT"]["evidence"]["error"]

    def listed() -> list[dict[str, Any]]:
        return [d for d in deadletters.listing(pipe.settings, limit=1000)
                if d["event_id"] == event_id]

    assert wait_until(lambda: len(listed()) == 1, 30)
    assert listed()[0]["nip"] == nip and listed()[0]["stage"] == "intake"
    out = deadletters.replay(pipe.settings, {event_id, "not-dead-lettered"})
    assert out["republished"] == [event_id] and out["not_found"] == ["not-dead-lettered"]
    assert wait_until(lambda: len(listed()) == 2, 60)  # the same bytes failed the same way


def test_decisions_of_the_same_millisecond_stand_as_the_rule_says(pipe: Pipeline) -> None:
    """Ties on decided_at go to the larger decision id, in ClickHouse as in `standing`."""
    month = date(2031, 9, 1)
    [day] = working_days(pipe, month, 1)
    nip = pipe.employee(photo=ME, office_id=new_office(pipe, "REV"))
    event_id = _day(pipe, nip, day, False)[0]
    pipe.verdicts([event_id])
    t = datetime.now(UTC).replace(microsecond=0)
    tied = [Decision(f"{n:08x}-0000-4000-8000-000000000000", event_id, "", kind, "x", "", t)
            for n, kind in ((0xFFFFFFFF, DecisionKind.CONFIRM), (1, DecisionKind.CLEAR))]
    assert review.publish_decisions(pipe.settings, tied) == (2, [])
    standing_now = standing(tied)
    assert standing_now is not None and standing_now.decision is DecisionKind.CONFIRM
    status = pipe.rows("SELECT decision, counted FROM v_checkin_status WHERE event_id = %(e)s",
                       {"e": event_id})
    assert status == [("CONFIRM", 0)]
    assert [h["decision"] for h in review.history(pipe.settings, event_id)][-1] == "CONFIRM"
