"""docs/api.md, the phone edge's HTTP API, written from the code.

Each body's fields come from its pydantic model (``bodies.py``, ``model_json_schema``), the
limits from the gateway's defaults; what a schema cannot say (what a field means, the checks made
after parsing, the answers) is written here beside the list of endpoints. ``python -m
hadir.gateway.apidoc`` writes docs/api.md (``--print``: to standard output instead);
tests/test_apidoc.py keeps the file equal to :func:`render` and checks that every route of the
app is listed here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hadir.config import GatewaySettings
from hadir.gateway.app import ACCEPTED_KEPT, REGISTRATION_BURST, REGISTRATION_PER_HOUR
from hadir.gateway.bodies import (
    SELFIE_MAX_BYTES,
    TIMES,
    AppealBody,
    CheckinBody,
    DeviceBody,
    ExcuseRequestBody,
)
from processors.fraud import FraudPolicy
from processors.review import MAX_REQUEST_DAYS

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
_G, _F = GatewaySettings(), FraudPolicy()
_YEARS = f"{TIMES[0]:%Y}..{TIMES[1]:%Y}"
_RETRY = f"`Retry-After` ({_G.retry_after_s} s)"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    signed: bool  # X-Hadir-Key and X-Hadir-Signature required
    limited: bool  # counts against the device's rate
    body: type[BaseModel] | None
    does: str
    answers: tuple[tuple[int, str], ...]


_UNSIGNED = (401, "unknown `X-Hadir-Key`, or a missing or bad signature")
_KAFKA_BUSY = (503, f"Kafka did not acknowledge within {_G.kafka_timeout_s:g} s, with {_RETRY}:"
                    " nothing was accepted; send it again")
_CLICKHOUSE_DOWN = (503, f"ClickHouse out of reach, with {_RETRY}: ask again later")

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/devices", False, False, DeviceBody,
             "Registers the app's key, once per install, with the one-time activation code HR "
             "issued for the ASN (`hadir device issue NIP`; valid "
             f"{_G.activation_ttl_h:g} hours). The key then fixes the NIP and the device_id of "
             "every signed request.",
             ((201, '`{"key_id", "nip", "device_id"}`: send `key_id` as `X-Hadir-Key` from now '
                    "on"),
              (400, "a bad body, or a public key that is not base64 of an EC P-256 "
                    "SubjectPublicKeyInfo"),
              (403, "a wrong, used or expired activation code"),
              (429, f"over {REGISTRATION_BURST} registration attempts for one NIP (refilled "
                    f"at {REGISTRATION_PER_HOUR:g} an hour), with `Retry-After: 3600`"),
              _KAFKA_BUSY)),
    Endpoint("POST", "/v1/checkins", True, True, CheckinBody,
             "A check-in (IN or OUT) with its GPS fix and selfie. The record published on "
             "`hadir.checkins.raw` carries the key's NIP and device_id and the gateway's clock "
             "as `server_time`.",
             ((202, '`{"event_id", "server_time"}`, only once Kafka has acknowledged the record '
                    "(acks=all, idempotent producer)"),
              (200, "the same body, for an `event_id` already accepted (also by a gateway "
                    f"restarted since, for {ACCEPTED_KEPT.days} days): no second record"),
              (400, "every bad field at once; also `offline_age_ms` over "
                    f"{_F.offline_max_s / 3600:g} hours, an `event_id` another NIP used, or the "
                    "import token without `server_time`"),
              _UNSIGNED,
              (403, "a revoked key, a body whose `nip` is not the key's, or a wrong import "
                    "token"),
              (413, f"a body over {_G.max_body_bytes:,} bytes"),
              (429, f"over the device's rate ({_G.rate_per_minute:g} a minute, a burst of "
                    f"{_G.rate_burst}), with `Retry-After`"),
              _KAFKA_BUSY)),
    Endpoint("GET", "/v1/checkins/{event_id}", True, False, None,
             "The verdict of one of the key's own check-ins, for the app to show.",
             ((200, '`{"event_id", "status", "reasons", "decision", "message"}`: `status` is '
                    "`PENDING` until the verdict is in ClickHouse, then `ACCEPTED`, `REVIEW` or "
                    "`REJECTED`; `decision` the reviewer's `CLEAR` or `CONFIRM` that stands, or "
                    "null; `message` in Bahasa Indonesia"),
              _UNSIGNED,
              (403, "a revoked key"),
              (404, "an unknown id (or not a UUID), or another NIP's check-in"),
              _CLICKHOUSE_DOWN)),
    Endpoint("POST", "/v1/appeals", True, True, AppealBody,
             "The ASN appeals the verdict of one of their check-ins; it joins the review queue "
             "(`hadir.appeals`).",
             ((202, '`{"id", "status": "received"}` once Kafka has it'),
              (200, "the same, for an `appeal_id` already received"),
              (400, "a bad body, or an `appeal_id` another NIP used"),
              _UNSIGNED,
              (403, "a revoked key, or another NIP's check-in"),
              (404, "an unknown check-in"),
              (413, f"a body over {_G.max_body_bytes:,} bytes"),
              (429, "over the device's rate, with `Retry-After`"),
              _KAFKA_BUSY, _CLICKHOUSE_DOWN)),
    Endpoint("POST", "/v1/excuse-requests", True, True, ExcuseRequestBody,
             "A request for leave, sick leave, permission or official duty, for the head of "
             "office or BKPSDM to approve (`hadir.excuse.requests`).",
             ((202, '`{"id", "status": "received"}` once Kafka has it'),
              (200, "the same, for a `request_id` already received"),
              (400, f"a bad body, `date_to` before `date_from`, more than {MAX_REQUEST_DAYS} "
                    "days, or a `request_id` another NIP used"),
              _UNSIGNED,
              (403, "a revoked key"),
              (413, f"a body over {_G.max_body_bytes:,} bytes"),
              (429, "over the device's rate, with `Retry-After`"),
              _KAFKA_BUSY)),
    Endpoint("GET", "/v1/me", True, True, None,
             "The ASN's own month as `hadir report tpp` computes it: `?month=YYYY-MM` (default: "
             "the current month in the attendance time zone).",
             ((200, '`{"nip", "month", "closed", "tpp", "days", "excuses", "requests"}`: each '
                    "day with its first IN, last OUT and codes, the TPP line so far, the "
                    "excuses, the requests and their status"),
              (400, f"`month` not like 2026-12, or outside {_YEARS}"),
              _UNSIGNED,
              (403, "a revoked key"),
              (429, "over the device's rate, with `Retry-After`"),
              _CLICKHOUSE_DOWN)),
    Endpoint("GET", "/healthz", False, False, None,
             "For load balancers and orchestrators (Kafka is asked at most every 2 s).",
             ((200, '`{"status": "ok"}` while Kafka answers'),
              (503, '`{"status": "kafka unreachable"}`'))),
    Endpoint("GET", "/metrics", False, False, None,
             "Prometheus text: `hadir_gateway_requests_total` (by route and status), "
             "`hadir_gateway_request_seconds` (latency histogram by route), "
             "`hadir_gateway_kafka_delivery_failures_total`, and the process's CPU and memory "
             "(`process_*`).",
             ((200, "the metrics"),)),
)

# What each body field means and what is checked beyond its JSON schema.
FIELDS: dict[tuple[str, str], str] = {
    ("CheckinBody", "event_id"): "the check-in's UUID, made by the phone; a retry sends the "
                                 "same one",
    ("CheckinBody", "nip"): "the ASN's 18-digit NIP; must be the key's",
    ("CheckinBody", "type"): "check-in (`IN`, masuk) or check-out (`OUT`, pulang)",
    ("CheckinBody", "client_time"): f"the phone's clock, RFC 3339 with an offset, {_YEARS}; "
                                    "audit and CLOCK_SKEW only",
    ("CheckinBody", "lat"): "WGS84 latitude, finite",
    ("CheckinBody", "lon"): "WGS84 longitude, finite",
    ("CheckinBody", "accuracy_m"): "the fix's accuracy radius in metres, finite; over "
                                   "100 m (default) is LOW_ACCURACY",
    ("CheckinBody", "mock_location"): "the OS flagged the fix as mocked (Android "
                                      "`Location.isMock()`, iOS `isSimulatedBySoftware`)",
    ("CheckinBody", "app_version"): "the app's version",
    ("CheckinBody", "selfie_jpeg"): f"base64 of a JPEG or PNG (by its magic bytes), at most "
                                    f"{SELFIE_MAX_BYTES:,} bytes decoded; without one the "
                                    "check-in is NO_SELFIE",
    ("CheckinBody", "offline_age_ms"): "for a check-in captured without signal and sent "
                                       "later: how long ago, by the phone's monotonic clock; "
                                       "the check-in's time is `server_time` minus this; over "
                                       f"{_F.offline_review_after_s / 3600:g} hours it is "
                                       "OFFLINE_DELAYED",
    ("CheckinBody", "server_time"): "ignored, except with a valid `X-Hadir-Import-Token` "
                                    f"(historical replay), where it is required; {_YEARS}",
    ("AppealBody", "appeal_id"): "the appeal's UUID, made by the phone",
    ("AppealBody", "event_id"): "the UUID of the check-in appealed; must be the key's NIP's",
    ("AppealBody", "note"): "why, in the ASN's words",
    ("ExcuseRequestBody", "request_id"): "the request's UUID, made by the phone",
    ("ExcuseRequestBody", "kind"): "CUTI (leave), SAKIT (sick), IZIN (permission), DINAS_LUAR "
                                   "(official duty elsewhere)",
    ("ExcuseRequestBody", "date_from"): f"first day, YYYY-MM-DD, {_YEARS}",
    ("ExcuseRequestBody", "date_to"): f"last day (inclusive), not before `date_from`, at most "
                                      f"{MAX_REQUEST_DAYS} days in all",
    ("ExcuseRequestBody", "note"): "why, in the ASN's words",
    ("DeviceBody", "nip"): "the ASN's 18-digit NIP, as HR issued the code for",
    ("DeviceBody", "activation_code"): "the one-time code from `hadir device issue` (case, "
                                       "spaces and dashes do not matter)",
    ("DeviceBody", "device_id"): "the app install's id, printable ASCII without spaces",
    ("DeviceBody", "public_key"): "base64 of the EC P-256 public key's DER "
                                  "SubjectPublicKeyInfo (Android Keystore, Secure Enclave)",
    ("DeviceBody", "platform"): "for example `android` or `ios`",
    ("DeviceBody", "model"): "the phone's model",
    ("DeviceBody", "app_version"): "the app's version",
}

HEADERS: tuple[tuple[str, str], ...] = (
    ("`X-Hadir-Key`", "the `key_id` the registration answered"),
    ("`X-Hadir-Signature`", "base64 of the DER ECDSA P-256 SHA-256 signature of the bytes "
                            '`METHOD + "\\n" + PATH + "\\n" + hex(sha256(body))`: PATH as sent, '
                            "with its query string; an empty body for GET"),
    ("`X-Hadir-Import-Token`", "only for `hadir replay`: with the configured importer token "
                               "(`HADIR_GATEWAY_IMPORT_TOKEN`), the body's `server_time` is kept "
                               "and the device's rate does not apply"),
)

STATUSES: tuple[tuple[int, str], ...] = (
    (200, "an answer; or a repeat of something already accepted (the same answer, nothing "
          "published again)"),
    (201, "a device registered"),
    (202, "accepted: Kafka has acknowledged the record"),
    (400, "the body breaks its model (every bad field at once), or a rule of its endpoint"),
    (401, "unknown `X-Hadir-Key`, or a missing or bad signature"),
    (403, "a revoked key, another NIP's data, a wrong, used or expired activation code, a wrong "
          "import token"),
    (404, "an unknown check-in, or another NIP's; an unknown path (405: a known path, another "
          "method)"),
    (413, f"a body over {_G.max_body_bytes:,} bytes (`HADIR_GATEWAY_MAX_BODY_BYTES`), by "
          "`Content-Length` or as it arrives"),
    (429, f"over a device's rate ({_G.rate_per_minute:g} a minute, a burst of {_G.rate_burst} "
          "for an offline queue), with `Retry-After`"),
    (500, "a bug (logged)"),
    (503, f"Kafka did not acknowledge within {_G.kafka_timeout_s:g} s "
          f"(`HADIR_GATEWAY_KAFKA_TIMEOUT_S`), with {_RETRY}: nothing was accepted, the phone "
          "keeps it queued; or a request that reads ClickHouse (a status, `/v1/me`, an "
          "appeal) while ClickHouse is out of reach"),
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(head: tuple[str, ...], rows: Iterable[tuple[object, ...]]) -> str:
    lines = [f"| {' | '.join(head)} |", f"|{'---|' * len(head)}"]
    lines += [f"| {' | '.join(_cell(str(c)) for c in row)} |" for row in rows]
    return "\n".join(lines)


INTRO = f"""\
# The phone edge's HTTP API

<!-- Generated by `python -m hadir.gateway.apidoc` from hadir/gateway/ (bodies.py, app.py,
apidoc.py); edit those, not this file. tests/test_apidoc.py fails when the two differ. -->

`hadir gateway` is the only way phones reach Hadir (DESIGN.md, "The phone edge"). It listens
on `http://{_G.host}:{_G.port}` by default, HTTPS when `HADIR_GATEWAY_TLS_CERT` and
`HADIR_GATEWAY_TLS_KEY` are set (`docker/compose.yaml` publishes it on port {_G.port}: put it
behind a TLS-terminating proxy or set those two). Bodies are JSON (UTF-8).

## Signing

A phone registers once (`POST /v1/devices`) and from then on signs every other `/v1` request
with its EC P-256 key, held in Android Keystore or the Secure Enclave:

{_table(('header', 'value'), HEADERS)}

The key fixes the NIP and the device_id: a body naming another NIP is 403, a `device_id` in a
body is never used, and `server_time` is the gateway's clock. A revoked key (`hadir device
revoke`) is refused by every gateway within a moment (the keys live on the compacted
`hadir.ref.devices`, which each gateway follows). A replayed request carries the same
event, appeal or request id and changes nothing.

## Answers

Every refusal has one shape, `{{"errors": [{{"field": F, "message": M}}]}}` (`field` may be
null). The messages of a 400 name the field's problem in English, for the app's developers;
every other message is Bahasa Indonesia, for the app to show.

{_table(('status', 'when'), STATUSES)}

Bodies are strict: `true` is not `"true"` and `1` is not `"1"`; fields not listed are ignored
(a newer app may send more).
"""


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _kind(option: dict[str, Any]) -> str:
    if "enum" in option:
        return " or ".join(f"`{v}`" for v in option["enum"])
    kind = str(option.get("type", "any"))
    return f"{kind} ({option['format']})" if "format" in option else kind


def _range(low: float | None, high: float | None, unit: str) -> list[str]:
    if low is not None and high is not None:
        return [f"{_number(low)}..{_number(high)}{unit}"]
    if high is not None:
        return [f"at most {_number(high)}{unit}"]
    return [] if low is None else [f"at least {_number(low)}{unit}"]


def _constraints(prop: dict[str, Any]) -> str:
    parts: list[str] = []
    for option in prop.get("anyOf", [prop]):
        parts += _range(option.get("minLength"), option.get("maxLength"), " characters")
        parts += _range(option.get("minimum"), option.get("maximum"), "")
        if "pattern" in option:
            parts.append(f"pattern `{option['pattern']}`")
    if "default" in prop:
        parts.append(f"default `{json.dumps(prop['default'])}`")
    return "; ".join(parts)


def fields(model: type[BaseModel]) -> str:
    """The model's JSON schema as a markdown table."""
    schema = model.model_json_schema()
    rows = []
    for name, prop in schema["properties"].items():
        meaning = FIELDS.get((model.__name__, name))
        if meaning is None:
            raise KeyError(f"{model.__name__}.{name} has no meaning in hadir/gateway/apidoc.py")
        rows.append((f"`{name}`", " or ".join(_kind(o) for o in prop.get("anyOf", [prop])),
                     "yes" if name in schema.get("required", ()) else "no",
                     _constraints(prop), meaning))
    return _table(("field", "type", "required", "constraints", "meaning"), rows)


def _endpoint(e: Endpoint) -> str:
    auth = ("**Signed**, and counted against the device's rate." if e.limited else
            "**Signed.**" if e.signed else "**Not signed.**")
    out = [f"## `{e.method} {e.path}`", "", e.does, "", auth, ""]
    if e.body is not None:
        out += [f"Body (`{e.body.__name__}`):", "", fields(e.body), ""]
    return "\n".join([*out, _table(("status", "when"), e.answers)]) + "\n"


def render() -> str:
    """The markdown of docs/api.md."""
    return "\n".join([INTRO, *(_endpoint(e) for e in ENDPOINTS)])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--print"]:
        sys.stdout.write(render())
        return 0
    if args:
        print("usage: python -m hadir.gateway.apidoc [--print]", file=sys.stderr)
        return 2
    DOC.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
