"""The bodies phones send, each one typed model that owns every bound (lengths, ranges,
formats); a body that breaks any is a 400 naming every bad field."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import date, datetime
from typing import Annotated, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from processors.events import (
    DEVICE_ID_PATTERN,
    NIP_PATTERN,
    PLAUSIBLE_TIMES,
    SELFIE_MAX_BYTES,
    TEXT_MAX,
)

NIP = Annotated[str, StringConstraints(pattern=f"^{NIP_PATTERN}$")]
TIMES = PLAUSIBLE_TIMES
JPEG, PNG = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


def _uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ValueError("not a UUID") from None


def _plausible(t: datetime) -> datetime:
    if not TIMES[0] <= t < TIMES[1]:
        raise ValueError(f"outside {TIMES[0]:%Y}..{TIMES[1]:%Y}")
    return t


def _plausible_day(d: date) -> date:
    if not TIMES[0].date() <= d < TIMES[1].date():
        raise ValueError(f"outside {TIMES[0]:%Y}..{TIMES[1]:%Y}")
    return d


def _image(text: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(data) > SELFIE_MAX_BYTES:
        raise ValueError(f"image of {len(data):,} bytes is over {SELFIE_MAX_BYTES:,}")
    if not data.startswith((JPEG, PNG)):
        raise ValueError("not a JPEG or PNG image")
    return data


Uuid = Annotated[str, StringConstraints(max_length=36), AfterValidator(_uuid)]
Time = Annotated[AwareDatetime, AfterValidator(_plausible)]
Text = Annotated[str, StringConstraints(max_length=TEXT_MAX)]


class _Body(BaseModel):
    # strict: no "true" for true nor "1" for 1; extra fields are ignored (a newer app may send
    # more), except that a device_id in a body is never used: the key fixes it.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class CheckinBody(_Body):
    event_id: Uuid
    nip: NIP
    type: Literal["IN", "OUT"]
    client_time: Time | None = None
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)
    accuracy_m: float | None = Field(default=None, ge=0, le=1_000_000, allow_inf_nan=False)
    mock_location: bool = False
    app_version: Text = ""
    selfie_jpeg: Annotated[str, StringConstraints(max_length=SELFIE_MAX_BYTES * 4 // 3 + 4),
                           AfterValidator(_image)] | None = None
    offline_age_ms: int = Field(default=0, ge=0, le=10**12)
    server_time: Time | None = None  # kept only with the importer token


Note = Annotated[str, StringConstraints(max_length=500)]


class AppealBody(_Body):
    appeal_id: Uuid
    event_id: Uuid
    note: Note = ""


class ExcuseRequestBody(_Body):
    request_id: Uuid
    kind: Literal["CUTI", "SAKIT", "IZIN", "DINAS_LUAR"]
    date_from: Annotated[date, AfterValidator(_plausible_day)]
    date_to: Annotated[date, AfterValidator(_plausible_day)]
    note: Note = ""


class DeviceBody(_Body):
    nip: NIP
    activation_code: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    device_id: Annotated[str, StringConstraints(pattern=f"^{DEVICE_ID_PATTERN}$")]
    public_key: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    platform: Text = ""
    model: Text = ""
    app_version: Text = ""


M = TypeVar("M", bound=_Body)


class BadBody(ValueError):
    """Every problem of a body, as ``{"field", "message"}`` items."""

    def __init__(self, errors: list[dict[str, str | None]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


def parse(model: type[M], body: bytes) -> M:
    """The body as ``model``, or BadBody naming every bad field (a body that is not a JSON
    object is one error without a field)."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors: list[dict[str, str | None]] = []
        for e in exc.errors(include_url=False, include_input=False):
            field = ".".join(str(part) for part in e["loc"]) or None
            message = e["msg"].removeprefix("Value error, ")
            if e["type"] in ("json_invalid", "json_type", "model_type"):
                field, message = None, "the body must be a JSON object"
            errors.append({"field": field, "message": message})
        raise BadBody(errors) from None


def public_key_der(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadBody([{"field": "public_key", "message": "not base64"}]) from None
