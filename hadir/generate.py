"""A realistic Bangka Tengah month as a scenario folder (DESIGN.md format), seeded and
reproducible, with fraud of every kind injected and written down in ``injected.csv``.

- Offices: OPD (agency) compounds of the regency around Koba, the regency seat, and the
  kecamatan (district) offices. Coordinates are approximate (public maps); polygons are
  plausible compounds of 60-120 m around them.
- ASN: NIPs in the real 18-digit format (birth date, appointment month, sex, sequence).
- Faces: the deepface test photos (../shared/faces). Each ASN is given one identity; the
  enrollment photo is one of its photos and daily selfies are fresh shots of the same person,
  simulated from the identity's photos by framing, pose, light and sensor noise (a new selfie is
  never pixel-identical to an old one, so an honest ASN is never a "replay").
- Days: working days of the month per WorkCalendar (weekends, holidays, cuti bersama, Ramadan).
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from itertools import islice
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cv2
import numpy as np
from PIL import Image

from processors.attendance import AttendancePolicy, WorkCalendar
from processors.events import InvalidCheckin
from processors.face import EnrollmentError, FaceVerifier
from processors.images import perceptual_hash

# (office_id, name, lat, lon): approximate locations in Kabupaten Bangka Tengah.
OFFICES: tuple[tuple[str, str, float, float], ...] = (
    ("SETDA", "Sekretariat Daerah", -2.48555, 106.40930),
    ("BKPSDM", "Badan Kepegawaian dan Pengembangan SDM", -2.48690, 106.41120),
    ("BAPPEDA", "Badan Perencanaan Pembangunan Daerah", -2.48430, 106.41210),
    ("BPKAD", "Badan Pengelolaan Keuangan dan Aset Daerah", -2.48800, 106.40780),
    ("DISDIK", "Dinas Pendidikan", -2.49120, 106.41350),
    ("DINKES", "Dinas Kesehatan", -2.48980, 106.40520),
    ("RSUD", "RSUD Bangka Tengah", -2.47650, 106.40260),
    ("PUPR", "Dinas Pekerjaan Umum dan Penataan Ruang", -2.49410, 106.40890),
    ("DUKCAPIL", "Dinas Kependudukan dan Pencatatan Sipil", -2.48320, 106.40610),
    ("DINSOS", "Dinas Sosial", -2.49260, 106.41760),
    ("KEC-KOBA", "Kantor Camat Koba", -2.49870, 106.41620),
    ("KEC-PANGKALANBARU", "Kantor Camat Pangkalan Baru", -2.17120, 106.14480),
    ("KEC-NAMANG", "Kantor Camat Namang", -2.29080, 106.27150),
    ("KEC-SIMPANGKATIS", "Kantor Camat Simpang Katis", -2.23980, 106.32100),
    ("KEC-SUNGAISELAN", "Kantor Camat Sungai Selan", -2.40020, 106.19040),
    ("KEC-LUBUKBESAR", "Kantor Camat Lubuk Besar", -2.60830, 106.52410),
)
# Official duty (DINAS_LUAR) happens in the provincial capital.
PANGKALPINANG = (-2.12910, 106.10940)

FIRST_NAMES = ("Agus", "Budi", "Dedi", "Eko", "Fajar", "Hendra", "Indra", "Joko", "Rudi",
               "Sigit", "Yusuf", "Rizky", "Ahmad", "Bambang", "Hasan", "Iwan", "Tan", "Lim",
               "Siti", "Dewi", "Ayu", "Fitri", "Lestari", "Nurul", "Rina", "Sri", "Wulan",
               "Yanti", "Ratna", "Mega", "Lina", "Mei")
LAST_NAMES = ("Saputra", "Pratama", "Hidayat", "Wijaya", "Kurniawan", "Setiawan", "Gunawan",
              "Santoso", "Rahman", "Syahputra", "Susanti", "Handayani", "Rahmawati", "Lestari",
              "Anggraini", "Permata", "Ahok", "Chandra", "Halim", "Tjoa", "Firmansyah")

FRAUD_KINDS = ("FAKE_GPS_HOME", "MOCK_LOCATION", "IMPOSSIBLE_TRAVEL", "SHARED_DEVICE",
               "FACE_MISMATCH", "SELFIE_REPLAY", "CLOCK_SKEW")
# The reason that must appear on an injected event for it to count as caught.
EXPECTED_REASON = {"FAKE_GPS_HOME": "OUTSIDE_GEOFENCE", "MOCK_LOCATION": "MOCK_LOCATION",
                   "IMPOSSIBLE_TRAVEL": "IMPOSSIBLE_TRAVEL", "SHARED_DEVICE": "SHARED_DEVICE",
                   "FACE_MISMATCH": "FACE_MISMATCH", "SELFIE_REPLAY": "SELFIE_REPLAY",
                   "CLOCK_SKEW": "CLOCK_SKEW"}
WIB = ZoneInfo("Asia/Jakarta")
M_PER_DEG = 111_320.0


def identities(faces_dir: Path) -> list[list[Path]]:
    """The photos of each person in the deepface set: files joined by the 'Yes' pairs of
    master.csv and face-recognition-pivot.csv; every labelled file not joined stands alone."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for name in ("master.csv", "face-recognition-pivot.csv"):
        with (faces_dir / name).open() as f:
            for row in csv.reader(f):
                if len(row) < 3 or row[0] == "file_x":
                    continue
                a, b = find(Path(row[0]).name), find(Path(row[1]).name)
                if row[2] == "Yes":
                    parent[a] = b
    groups: dict[str, list[Path]] = {}
    for name in sorted(parent):
        if (faces_dir / name).is_file():
            groups.setdefault(find(name), []).append(faces_dir / name)
    return [sorted(g) for _, g in sorted(groups.items())]


def load_photo(path: Path, max_side: int = 640) -> np.ndarray:
    """A face photo, downscaled like a phone upload (the set has 4600 px originals)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: not an image")
    scale = max_side / max(img.shape[:2])
    if scale < 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return img


def _offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return (lat + north_m / M_PER_DEG,
            lon + east_m / (M_PER_DEG * math.cos(math.radians(lat))))


def office_polygon(lat: float, lon: float, rng: random.Random) -> list[list[float]]:
    """A rotated rectangle of 60-120 m around the office point, as a closed lon/lat ring."""
    w, h = rng.uniform(60, 120) / 2, rng.uniform(50, 100) / 2
    a = math.radians(rng.uniform(0, 90))
    ring = []
    for x, y in ((-w, -h), (w, -h), (w, h), (-w, h)):
        east, north = x * math.cos(a) - y * math.sin(a), x * math.sin(a) + y * math.cos(a)
        plat, plon = _offset(lat, lon, north, east)
        ring.append([round(plon, 7), round(plat, 7)])
    ring.append(ring[0])
    return ring


def make_nip(rng: random.Random, seq: int) -> str:
    born = date(1966, 1, 1) + timedelta(days=rng.randrange(32 * 365))
    appointed = date(min(born.year + rng.randint(22, 32), 2024), rng.randint(1, 12), 1)
    return f"{born:%Y%m%d}{appointed:%Y%m}{rng.choice('12')}{seq % 1000:03d}"


def _framed(h: int, w: int, side: int) -> tuple[int, int]:
    """The size (height, width) of an h x w photo scaled so that its longer side is ``side``."""
    scale = side / max(h, w)
    return max(1, int(h * scale)), max(1, int(w * scale))


@dataclass(frozen=True, slots=True, eq=False)
class Shot:
    """Every random choice of one selfie. SelfieCamera.plan draws them in one fixed order (the
    order is what makes a seed give the same pictures); developing them draws nothing."""

    tilt: float  # head turn, degrees
    mirror: bool  # front cameras mirror
    side: int  # the face's longer side in the frame, px
    cells: np.ndarray  # the room's colour field, k x k x 3
    shapes: tuple[tuple[int, int, int, int, tuple[int, int, int]], ...]  # x, y, w, h, colour
    top: int  # where the face sits in the frame
    left: int
    light_angle: float  # the side the light comes from, radians
    light_strength: float
    exposure: float
    gamma: float
    noise: np.ndarray  # sensor noise, one value per pixel and channel
    quality: int  # JPEG quality


class SelfieCamera:
    """Simulated fresh selfies of one photo: the person framed anew against a new background
    (a phone held at another angle sees another part of the room), a slight head turn, light
    from a new side, sensor noise, re-encoded; 360 px square like a compressed app upload.

    The new background is what makes two honest selfies perceptually different, as two real
    selfies taken on different days are: without it, hundreds of re-framings of one photo
    would collide in a 64-bit perceptual hash and read as replays.

    A shot is planned (its random choices drawn, in order, from ``rng``), then developed (the
    pixels and the JPEG, the costly part): developing can run on other threads."""

    def __init__(self, rng: np.random.Generator, size: int = 360) -> None:
        self.rng = rng
        self.size = size

    def shoot(self, photo: np.ndarray) -> bytes:
        return self.develop(photo, self.plan(photo.shape))

    def plan(self, shape: tuple[int, ...]) -> Shot:
        """The choices for a photo of ``shape`` (its size bounds where the face can sit), drawn
        in the camera's order: another order would give a seed other pictures."""
        rng, n = self.rng, self.size
        tilt = rng.uniform(-8, 8)
        mirror = rng.random() < 0.5
        side = int(n * rng.uniform(0.5, 0.66))
        # The room: a smooth random colour field with a few flat shapes (door, shelf, window).
        k = int(rng.integers(3, 7))
        cells = rng.integers(20, 236, (k, k, 3)).astype(np.uint8)
        shapes = tuple(self._room_shape() for _ in range(int(rng.integers(2, 5))))
        h, w = _framed(shape[0], shape[1], side)
        top = int(rng.integers(0, n - h + 1))
        left = int(rng.integers(0, n - w + 1))
        light_angle = rng.uniform(0, 2 * math.pi)
        light_strength = rng.uniform(0.1, 0.3)
        exposure = rng.uniform(0.85, 1.15)
        gamma = rng.uniform(0.85, 1.2)
        noise = _noise(rng, (n, n, 3), 3)
        quality = int(rng.integers(80, 92))
        return Shot(tilt, mirror, side, cells, shapes, top, left, light_angle, light_strength,
                    exposure, gamma, noise, quality)

    def _room_shape(self) -> tuple[int, int, int, int, tuple[int, int, int]]:
        rng, n = self.rng, self.size
        x, y = rng.integers(0, n, 2)
        w, h = rng.integers(n // 8, n // 2, 2)
        return int(x), int(y), int(w), int(h), tuple(int(c) for c in rng.integers(0, 256, 3))

    def develop(self, photo: np.ndarray, shot: Shot) -> bytes:
        """The JPEG of ``shot`` of ``photo``; the same bytes every time."""
        n = self.size
        h, w = photo.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), shot.tilt, 1.0)
        face = cv2.warpAffine(photo, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        if shot.mirror:
            face = cv2.flip(face, 1)
        fh, fw = _framed(h, w, shot.side)
        face = cv2.resize(face, (fw, fh), interpolation=cv2.INTER_AREA)
        frame = cv2.resize(shot.cells, (n, n), interpolation=cv2.INTER_CUBIC)
        for x, y, sw, sh, color in shot.shapes:
            cv2.rectangle(frame, (x, y), (x + sw, y + sh), color, -1)
        frame[shot.top:shot.top + fh, shot.left:shot.left + fw] = face
        # Light from one side: a smooth gradient, then exposure, gamma and sensor noise.
        ramp = np.linspace(-1, 1, n, dtype=np.float32)
        d = shot.light_angle
        light = 1 + shot.light_strength * (ramp[None, :] * math.cos(d) +
                                           ramp[:, None] * math.sin(d))
        gain = light[..., None] * shot.exposure
        lut = (255 * (np.arange(256) / 255) ** shot.gamma).astype(np.uint8)
        # In place: the same sums as clip(frame * gain + noise) in half the time.
        lit = frame.astype(np.float32)
        lit *= gain
        out = np.add(lit, shot.noise)
        np.clip(out, 0, 255, out=out)
        img = cv2.LUT(out.astype(np.uint8), lut)
        ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, shot.quality])
        assert ok
        return jpg.tobytes()


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """``rng.normal(0, sigma, shape)`` bit for bit (numpy computes 0 + sigma * z, the same but for
    the sign of a zero, which adding it to a non-negative pixel cancels), 10% faster: this draw
    is half a selfie's time, and the one part that cannot leave the stream's thread."""
    noise = rng.standard_normal(shape)
    noise *= sigma
    return noise


def _phash(jpeg: bytes) -> int:
    return int(perceptual_hash(Image.open(io.BytesIO(jpeg))), 16)


class FreshShots:
    """Every honest selfie a genuinely new picture: a shot whose perceptual hash comes within
    ``min_bits`` of an earlier one is taken again (real selfies of different days differ; the
    simulation must not manufacture replays the detector would rightly flag)."""

    TRIES = 50

    def __init__(self, camera: SelfieCamera, min_bits: int = 14,
                 earlier: Iterable[str] = ()) -> None:
        """``earlier``: hashes of selfies taken before (the stack's, from other runs)."""
        self.camera = camera
        self.min_bits = min_bits
        self.hashes = np.array([int(h, 16) for h in earlier], dtype=np.uint64)

    def shoot(self, photo: np.ndarray) -> bytes:
        for _ in range(self.TRIES):
            data = self.camera.shoot(photo)
            if self.admit(_phash(data)):
                return data
        raise RuntimeError("could not simulate a selfie distinct from the earlier ones")

    def admit(self, phash: int) -> bool:
        """Whether a shot of this perceptual hash is new enough to keep; kept, it is remembered."""
        h = np.uint64(phash)
        if len(self.hashes) and np.bitwise_count(self.hashes ^ h).min() < self.min_bits:
            return False
        self.hashes = np.append(self.hashes, h)
        return True


@dataclass(eq=False)
class _Order:
    """A selfie wanted: of ``photo``, into ``dest``."""

    photo: np.ndarray
    dest: Path
    refused: int = 0  # shots of it taken and refused as too like an earlier selfie


@dataclass(eq=False)
class _Attempt:
    """A shot planned for an order and sent to be developed."""

    state: dict[str, Any]  # the camera's random stream before the shot's choices were drawn
    developed: Future[tuple[bytes, int]]  # its JPEG and perceptual hash


class Darkroom:
    """The selfies ``FreshShots.shoot`` would take, byte for byte, with the developing (pixels,
    JPEG and perceptual hash: half a selfie's time) done on ``threads`` threads while this one
    plans the next shots (drawing the sensor noise is most of the other half). OpenCV, numpy and
    PIL let go of the GIL for that work; on two cores one developing thread is best (measured:
    a second one only competes with the planning for the cores).

    A shot's choices come from one random stream, and whether it is kept depends on the shots
    kept before it, so the choices are drawn here, in order, for up to ``ahead`` orders at once,
    as if every shot will be kept. One in ten or so is refused: the stream is then rewound to
    where the refused shot's choices ended (where the next order's began), and the orders after
    it are planned again once the refused one has been retaken: the same draws, in the same
    order, as FreshShots.

    ``shoot`` queues a selfie and returns; it is written to its file once kept. ``flush`` waits
    for every queued one."""

    def __init__(self, shots: FreshShots, threads: int = 1, ahead: int = 3) -> None:
        self.shots = shots
        self.ahead = ahead
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="darkroom")
        self._orders: deque[_Order] = deque()  # not yet kept, in order
        self._attempts: deque[_Attempt] = deque()  # _attempts[i] is a shot for _orders[i]

    def __enter__(self) -> Darkroom:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:
                self.flush()
        finally:
            self._pool.shutdown(cancel_futures=True)

    def shoot(self, photo: np.ndarray, dest: Path) -> None:
        self._orders.append(_Order(photo, dest))
        while len(self._orders) > self.ahead:
            self._settle()
        self._plan()

    def flush(self) -> None:
        while self._orders:
            self._settle()

    def _plan(self) -> None:
        """Plan and send off a shot for each order not yet being developed, up to ``ahead``."""
        camera = self.shots.camera
        for order in islice(self._orders, len(self._attempts), self.ahead):
            state = camera.rng.bit_generator.state
            shot = camera.plan(order.photo.shape)
            self._attempts.append(_Attempt(state, self._pool.submit(
                self._develop, order.photo, shot)))

    def _develop(self, photo: np.ndarray, shot: Shot) -> tuple[bytes, int]:
        jpeg = self.shots.camera.develop(photo, shot)
        return jpeg, _phash(jpeg)

    def _settle(self) -> None:
        """Keep the oldest order's shot, or refuse it and rewind for a retake."""
        self._plan()
        attempt = self._attempts.popleft()
        jpeg, phash = attempt.developed.result()
        order = self._orders[0]
        if self.shots.admit(phash):
            self._orders.popleft()
            order.dest.write_bytes(jpeg)
            return
        order.refused += 1
        if order.refused == FreshShots.TRIES:
            raise RuntimeError("could not simulate a selfie distinct from the earlier ones")
        # The retake draws what the next planned shot drew; everything planned after is redone.
        if self._attempts:
            self.shots.camera.rng.bit_generator.state = self._attempts[0].state
        for later in self._attempts:
            later.developed.cancel()
        self._attempts.clear()


def usable_photos(people: list[list[Path]], verifier: FaceVerifier) -> list[list[Path]]:
    """Per identity, the photos a selfie can be simulated from: exactly one face, and clearly
    the enrolled person (the first such photo is the enrollment photo)."""
    out = []
    for group in people:
        template = None
        kept: list[Path] = []
        for path in group:
            data = path.read_bytes()
            try:
                if template is None:
                    template = verifier.enroll([data])
                    kept.append(path)
                    continue
                result = verifier.verify(data, template.embedding)
            except (EnrollmentError, InvalidCheckin):
                continue
            if not result.findings and (result.similarity or 0) >= verifier.threshold + 0.15:
                kept.append(path)
        if kept:
            out.append(kept)
    return out


@dataclass
class Asn:
    nip: str
    name: str
    office: tuple[str, str, float, float]
    tpp_base_idr: int
    photos: list[Path]  # [enrollment, selfie sources...]
    identity: int
    device_id: str
    home: tuple[float, float]
    punctuality: float  # 0 always on time .. 1 often late


@dataclass
class Generated:
    folder: Path
    events: int
    injected: dict[str, int] = field(default_factory=dict)


class _Writer:
    """Collects events and selfie files; each selfie gets its own file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / "selfies").mkdir(parents=True, exist_ok=True)
        self.events: list[dict[str, object]] = []
        self.injected: list[tuple[str, str, str]] = []

    def selfie(self, data: bytes) -> str:
        name = self._selfie_name()
        (self.folder / name).write_bytes(data)
        return name

    def shot(self, camera: Darkroom, photo: np.ndarray) -> str:
        """A fresh selfie of ``photo``: the file is written once the camera has developed it
        (``camera.flush()`` waits for that)."""
        name = self._selfie_name()
        camera.shoot(photo, self.folder / name)
        return name

    def _selfie_name(self) -> str:
        return f"selfies/{len(self.events):06d}.jpg"

    def add(self, rng: random.Random, asn_nip: str, device: str, kind: str, at: datetime,
            lat: float, lon: float, selfie: str | None, *, accuracy: float | None = None,
            mock: bool = False, client_skew_s: float | None = None,
            fraud: str | None = None) -> str:
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        skew = client_skew_s if client_skew_s is not None else rng.uniform(-20, 20)
        self.events.append({
            "event_id": event_id, "nip": asn_nip, "device_id": device, "type": kind,
            "server_time": at.isoformat(timespec="milliseconds"),
            "client_time": (at + timedelta(seconds=skew)).isoformat(timespec="milliseconds"),
            "lat": round(lat, 7), "lon": round(lon, 7),
            "accuracy_m": round(accuracy if accuracy is not None else rng.uniform(4, 35), 1),
            "mock_location": mock, "selfie": selfie, "app_version": "2.4.1",
        })
        if fraud:
            self.injected.append((event_id, asn_nip, fraud))
        return event_id


def generate(folder: Path, faces_dir: Path, month: date, verifier: FaceVerifier,
             asn_count: int = 300, seed: int = 7, policy: AttendancePolicy | None = None,
             progress: Callable[[int, int], None] | None = None,
             earlier_selfies: Iterable[str] = ()) -> Generated:
    """Write the scenario folder for ``month`` and return what was injected. Honest selfies
    differ from each other and from ``earlier_selfies`` (perceptual hashes the stack has seen:
    another month's run would otherwise take the same shots again, and be flagged as replays)."""
    # Each month its own draw: the same seed for another month must not give the same event
    # ids (already judged: skipped as duplicates) nor the same selfie shots (replays).
    rng = random.Random(f"{seed}/{month:%Y-%m}")
    shots = FreshShots(SelfieCamera(np.random.default_rng((seed, month.year, month.month))),
                       earlier=earlier_selfies)
    folder.mkdir(parents=True, exist_ok=True)
    people = usable_photos(identities(faces_dir), verifier)
    cal = WorkCalendar(policy or AttendancePolicy())

    features = []
    for office_id, name, lat, lon in OFFICES:
        features.append({"type": "Feature",
                         "properties": {"office_id": office_id, "name": name},
                         "geometry": {"type": "Polygon",
                                      "coordinates": [office_polygon(lat, lon, rng)]}})
    (folder / "offices.geojson").write_text(json.dumps(
        {"type": "FeatureCollection", "features": features}, indent=1))

    (folder / "enroll").mkdir(exist_ok=True)
    staff: list[Asn] = []
    nips: set[str] = set()
    for i in range(asn_count):
        nip = make_nip(rng, i)
        while nip in nips:
            nip = make_nip(rng, rng.randrange(1000))
        nips.add(nip)
        identity = i % len(people)
        office = rng.choice(OFFICES)
        home = _offset(office[2], office[3], rng.uniform(-6000, 6000), rng.uniform(-6000, 6000))
        staff.append(Asn(nip, f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}", office,
                         rng.randrange(1_500_000, 9_000_000, 250_000), people[identity],
                         identity, f"android-{rng.getrandbits(48):012x}", home,
                         rng.betavariate(1.2, 6)))
    with (folder / "employees.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["nip", "name", "office_id", "tpp_base_idr", "photo"])
        for a in staff:
            photo = f"enroll/{a.nip}.jpg"
            (folder / photo).write_bytes(a.photos[0].read_bytes())
            out.writerow([a.nip, a.name, a.office[0], a.tpp_base_idr, photo])

    days = cal.working_days(month.year, month.month)
    excuses = _excuses(rng, staff, days)
    with (folder / "excuses.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["nip", "date_from", "date_to", "kind"])
        out.writerows(excuses)
    excused = {(nip, d): kind for nip, d1, d2, kind in excuses
               for d in days if d1 <= d.isoformat() <= d2}

    w = _Writer(folder)
    photos = {i: [load_photo(p) for p in ps] for i, ps in enumerate(people)}
    frauds = _plan_frauds(rng, staff, days)
    with Darkroom(shots) as camera:  # both cores at the selfies, the same as one by one
        for n, day in enumerate(days):
            start, end = cal.schedule(day) or (time(7, 30), time(16, 0))
            for a in staff:
                kind = excused.get((a.nip, day))
                if kind in ("CUTI", "SAKIT", "IZIN") or (kind is None and rng.random() < 0.015):
                    continue  # on leave, or absent without a reason (TK)
                lat, lon = (a.office[2], a.office[3]) if kind != "DINAS_LUAR" else PANGKALPINANG
                _honest_day(rng, w, camera, photos[a.identity], a, day, start, end, lat, lon)
            for fraud in frauds.get(day, ()):
                fraud(w, camera, photos, day, start)
            if progress:
                progress(n + 1, len(days))

    w.events.sort(key=lambda e: str(e["server_time"]))
    with (folder / "events.jsonl").open("w") as f:
        for e in w.events:
            f.write(json.dumps(e) + "\n")
    with (folder / "injected.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["event_id", "nip", "fraud", "expected_reason"])
        out.writerows((e, nip, k, EXPECTED_REASON[k]) for e, nip, k in w.injected)
    counts: dict[str, int] = {}
    for _, _, k in w.injected:
        counts[k] = counts.get(k, 0) + 1
    return Generated(folder, len(w.events), counts)


def _excuses(rng: random.Random, staff: list[Asn],
             days: list[date]) -> list[tuple[str, str, str, str]]:
    out = []
    for a in staff:
        r = rng.random()
        if r < 0.05:
            kind, length = "CUTI", rng.randint(2, 5)
        elif r < 0.10:
            kind, length = "SAKIT", rng.randint(1, 3)
        elif r < 0.13:
            kind, length = "IZIN", 1
        elif r < 0.18:
            kind, length = "DINAS_LUAR", rng.randint(1, 3)
        else:
            continue
        i = rng.randrange(max(1, len(days) - length))
        out.append((a.nip, days[i].isoformat(), days[min(i + length, len(days)) - 1].isoformat(),
                    kind))
    return out


def _wib(day: date, t: time, minutes: float) -> datetime:
    return datetime.combine(day, t, WIB) + timedelta(minutes=minutes)


def _honest_day(rng: random.Random, w: _Writer, camera: Darkroom, photos: list[np.ndarray],
                a: Asn, day: date, start: time, end: time, lat: float, lon: float) -> None:
    source = photos[1:] or photos  # selfies from other photos of the person when there are any
    late = rng.random() < a.punctuality
    arrive = rng.uniform(1, 75) if late else -rng.uniform(2, 40)
    if late and rng.random() < 0.1:
        arrive = rng.uniform(91, 150)
    north, east = rng.uniform(-20, 20), rng.uniform(-20, 20)
    p = _offset(lat, lon, north, east)
    acc = rng.uniform(60, 95) if rng.random() < 0.03 else None  # indoor fix, still under 100 m
    w.add(rng, a.nip, a.device_id, "IN", _wib(day, start, arrive), *p,
          w.shot(camera, rng.choice(source)), accuracy=acc)
    if rng.random() < 0.02:
        return  # forgot to check out (PSW4)
    early = rng.random() < a.punctuality * 0.5
    leave = -rng.uniform(1, 70) if early else rng.uniform(0, 45)
    p = _offset(lat, lon, rng.uniform(-20, 20), rng.uniform(-20, 20))
    w.add(rng, a.nip, a.device_id, "OUT", _wib(day, end, leave), *p,
          w.shot(camera, rng.choice(source)))


def _plan_frauds(rng: random.Random, staff: list[Asn], days: list[date]
                 ) -> dict[date, list[Callable[..., None]]]:
    """A handful of cheaters, each cheating a few times in the month, of every kind."""
    plan: dict[date, list[Callable[..., None]]] = {}
    cheaters = rng.sample(staff, k=min(len(staff), 28))

    def on(day: date, f: Callable[..., None]) -> None:
        plan.setdefault(day, []).append(f)

    def other_identity(a: Asn) -> int:
        return next(s.identity for s in rng.sample(staff, len(staff))
                    if s.identity != a.identity)

    for i, a in enumerate(cheaters):
        kind = FRAUD_KINDS[i % len(FRAUD_KINDS)]
        for day in rng.sample(days, k=min(len(days), 3)):
            on(day, _fraud(kind, a, staff, rng, other_identity))
    return plan


def _fraud(kind: str, a: Asn, staff: list[Asn], rng: random.Random,
           other_identity: Callable[[Asn], int]) -> Callable[..., None]:
    """One injected fraud on one day. Cheaters cheat on top of their honest day: the extra
    check-in is the fraudulent one (an ASN pretending to be elsewhere, or someone else)."""

    def run(w: _Writer, camera: Darkroom, photos: dict[int, list[np.ndarray]], day: date,
            start: time) -> None:
        own = photos[a.identity]
        office = (a.office[2], a.office[3])
        at = _wib(day, start, -rng.uniform(50, 70))  # before the honest IN, early morning
        if kind == "FAKE_GPS_HOME":
            w.add(rng, a.nip, a.device_id, "IN", at, *a.home, w.shot(camera, own[0]),
                  fraud=kind)
        elif kind == "MOCK_LOCATION":
            w.add(rng, a.nip, a.device_id, "IN", at, *office, w.shot(camera, own[0]),
                  mock=True, accuracy=3.0, fraud=kind)
        elif kind == "IMPOSSIBLE_TRAVEL":
            far = _offset(*office, rng.uniform(25_000, 40_000), rng.uniform(-5_000, 5_000))
            w.add(rng, a.nip, a.device_id, "IN", at, *office, w.shot(camera, own[0]))
            w.add(rng, a.nip, a.device_id, "IN", at + timedelta(minutes=6), *far,
                  w.shot(camera, own[0]), fraud=kind)
        elif kind == "SHARED_DEVICE":
            # The owner checks in on the phone, then hands it round the team.
            w.add(rng, a.nip, a.device_id, "IN", at, *office, w.shot(camera, own[0]))
            # Colleagues from the same office first (a small regency may have none there).
            team = sorted((s for s in staff if s is not a),
                          key=lambda s: s.office != a.office)[:3]
            for k, mate in enumerate(team):
                w.add(rng, mate.nip, a.device_id, "IN", at + timedelta(minutes=k + 1),
                      *office, w.shot(camera, photos[mate.identity][0]), fraud=kind)
        elif kind == "FACE_MISMATCH":
            stranger = photos[other_identity(a)][0]
            w.add(rng, a.nip, a.device_id, "IN", at, *office,
                  w.shot(camera, stranger), fraud=kind)
        elif kind == "SELFIE_REPLAY":
            first = w.shot(camera, own[0])
            w.add(rng, a.nip, a.device_id, "IN", at - timedelta(days=1), *office, first)
            camera.flush()  # the first selfie's file written
            replay = cv2.imdecode(np.frombuffer((w.folder / first).read_bytes(), np.uint8),
                                  cv2.IMREAD_COLOR)
            ok, again = cv2.imencode(".jpg", cv2.resize(replay, (400, 400)),
                                     [cv2.IMWRITE_JPEG_QUALITY, 70])
            assert ok
            w.add(rng, a.nip, a.device_id, "IN", at, *office, w.selfie(again.tobytes()),
                  fraud=kind)
        elif kind == "CLOCK_SKEW":
            w.add(rng, a.nip, a.device_id, "IN", at, *office, w.shot(camera, own[0]),
                  client_skew_s=-rng.uniform(2, 6) * 3600, fraud=kind)

    return run
