"""The intake stage, the expensive one: decode the raw check-in, check the GPS fix, verify the
selfie (face, liveness, replay), and hand the check-in (without its selfie) to the person stage.

It holds no per-key state, so any number of intake workers share hadir.checkins.raw's
partitions. What they share is reference data (face templates) and the selfie replay index,
both followed from compacted topics by every worker.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

import faust
import numpy as np

from hadir import faces, kafka_access, topics
from hadir.config import Settings
from hadir.serde import AvroCodec, Registry, SerdeError
from processors import geo
from processors.events import Checkin, Finding, InvalidCheckin, Reason
from processors.face import FaceResult, FaceVerifier
from processors.replay_index import ReplayIndex
from processors.retention import DAY_MS
from processors.templates import TemplateError, UnknownKey
from streams.deadletters import DeadLetters, Undecodable, decoded
from streams.records import checkin_from_raw, epoch_ms, in_progress
from streams.reference import ReferenceFollower
from streams.stage import crash_only, input_batches, new_app, new_outbox, raw_topic

log = logging.getLogger("hadir.intake")

_PHASH = re.compile(r"[0-9a-f]{16}")

BATCH = 500  # check-ins taken together from the raw topic
FACE_BATCH = 64  # selfies verified together; their outputs are sent before the next ones


def face_chunks(checked: Sequence[tuple[Any, Checkin, list[Finding]]],
                size: int = FACE_BATCH) -> Iterator[list[tuple[Any, Checkin, list[Finding]]]]:
    """A batch cut into consecutive runs holding at most ``size`` selfies each; check-ins
    without a selfie ride along. Order is kept (the person stage needs each NIP's check-ins
    in order), a batch without selfies is one run, and a batch full of selfies sends its
    first verdicts' inputs after one face batch instead of after all of them."""
    chunk: list[tuple[Any, Checkin, list[Finding]]] = []
    selfies = 0
    for item in checked:
        if item[1].selfie is not None and selfies == size:
            yield chunk
            chunk, selfies = [], 0
        chunk.append(item)
        selfies += item[1].selfie is not None
    if chunk:
        yield chunk


FAILED = "face verification failed"  # a selfie the models raised on


def judge(verifier: FaceVerifier, items: Sequence[tuple[bytes, np.ndarray | None]]
          ) -> list[FaceResult | InvalidCheckin]:
    """Each selfie's face result against its template (None: not enrolled; the selfie is still
    checked); a bad image is its InvalidCheckin. When the batch fails, the verifier checks
    itself on an image it knows: if that fails too the fault is the machine's (the GPU,
    memory), not the selfies', and it is raised, so the worker restarts with the batch
    unjudged. Otherwise the selfies are judged one by one, and one that breaks the models
    (not merely a bad image) becomes a dead letter instead of a worker that fails on it
    forever."""
    try:
        return verifier.verify_many(items)
    except Exception as exc:
        verifier.self_check()
        if len(items) == 1:
            log.error("face verification failed on one selfie: %s: %s", type(exc).__name__, exc)
            return [InvalidCheckin(f"{FAILED}: {type(exc).__name__}: {exc}")]
        return [result for item in items for result in judge(verifier, [item])]


def build_intake_app(settings: Settings) -> faust.App:
    app = new_app(kafka_access.INTAKE_APP, settings, "intake")
    registry = Registry(settings.infra.registry)
    raw_codec = AvroCodec(topics.RAW, registry)
    faced = AvroCodec(topics.FACED, registry)
    faced_partitions = topics.partitions(topics.FACED, settings.infra)
    selfie_codec = AvroCodec(topics.SELFIES, registry)
    dlq = DeadLetters(registry, "intake", settings.fraud)
    raw = raw_topic(app, topics.RAW, stage_input=True)
    outbox = new_outbox(app)

    verifier = faces.verifier(settings)
    cipher = verifier.cipher(faces.template_keyring(settings))
    if not verifier.liveness_enabled:
        log.warning("liveness check is off: no anti-spoofing model pack configured "
                    "(HADIR_FACE_LIVENESS_DIR); SPOOF is never raised")
    templates: dict[str, np.ndarray] = {}
    replay = ReplayIndex(
        settings.face.replay_max_hamming, settings.privacy.selfie_hashes_days * DAY_MS,
        publish=lambda phash, first: outbox.add(topics.SELFIES.name, phash.encode(),
                                                selfie_codec.encode({"entry": phash,
                                                                     "value": first})))

    def open_template(blob: bytes, nip: str) -> np.ndarray:
        nonlocal cipher
        try:
            return cipher.open(blob, nip).embedding
        except UnknownKey:
            # Sealed with a key rotated in since this worker started (`hadir face rekey`):
            # read the keyring again, once per such template.
            cipher = verifier.cipher(faces.template_keyring(settings))
            return cipher.open(blob, nip).embedding

    def on_template(key: bytes | None, value: dict[str, Any] | None) -> None:
        nip = (key or b"").decode()
        if value is None:
            templates.pop(nip, None)
            return
        try:
            if value["nip"] != nip:
                raise TemplateError(f"the record's NIP is {value['nip']}")
            templates[nip] = open_template(value["sealed"], nip)
        except TemplateError as exc:
            # Enrolled with another pack or key, or not this ASN's: the ASN must be
            # re-enrolled; until then their check-ins say NO_TEMPLATE for a person to handle.
            templates.pop(nip, None)
            log.error("face template under key %s cannot be used: %s", nip, exc)

    def on_selfie(key: bytes | None, value: dict[str, Any] | None) -> None:
        if value is None:  # an erased ASN's entry (`hadir erase`)
            if key is not None and _PHASH.fullmatch(key.decode(errors="replace")):
                replay.forget(key.decode())
            return
        try:  # a reference record is input too
            if _PHASH.fullmatch(value["entry"]) is None:
                raise ValueError(f"{value['entry'][:40]!r} is not a perceptual hash")
            replay.learn(value["entry"], value["value"])
        except ValueError as exc:
            log.error("selfie index entry ignored: %s", exc)

    follower = ReferenceFollower(kafka_access.aiokafka(settings.infra, "intake"), {
        topics.FACES.name: AvroCodec(topics.FACES, registry),
        topics.SELFIES.name: selfie_codec,
    }, {topics.FACES.name: on_template, topics.SELFIES.name: on_selfie})

    @app.task
    async def follow_reference() -> None:
        await follower.run()

    max_offline_ms = int(settings.fraud.offline_max_s * 1000)

    @app.agent(raw)
    async def intake(stream: Any) -> None:
        await follower.ready.wait()
        await crash_only(batches(stream), "intake stage")

    def checked_fix(value: bytes) -> tuple[Checkin, list[Finding]]:
        """The check-in of a raw record and what its GPS fix alone says."""
        record = None
        try:
            record = raw_codec.decode(value)
            checkin = checkin_from_raw(record, max_offline_ms)
            return checkin, geo.check_fix(checkin, settings.geo)
        except (SerdeError, InvalidCheckin) as exc:
            raise Undecodable(f"{type(exc).__name__}: {exc}", record) from None

    async def batches(stream: Any) -> None:
        async for events in input_batches(app, stream, BATCH):
            checked = [(event, checkin, found) for event, (checkin, found)
                       in decoded(events, checked_fix, dlq, outbox)]
            if any(c.selfie is not None and c.nip not in templates for _, c, _ in checked):
                await follower.catch_up()
            for chunk in face_chunks(checked):
                await verify_and_forward(chunk)
            await outbox.send()  # dead letters of a batch that had nothing else to send

    async def verify_and_forward(chunk: list[tuple[Any, Checkin, list[Finding]]]) -> None:
        """Verify the chunk's selfies (off the event loop), then send each check-in on."""
        with_selfie = [(c.selfie, templates.get(c.nip)) for _, c, _ in chunk
                       if c.selfie is not None]
        loop = asyncio.get_running_loop()
        # A chunk without selfies (the common case at full rate) skips the thread hand-off.
        judged = (await loop.run_in_executor(None, judge, verifier, with_selfie)
                  if with_selfie else [])
        results = iter(zip(judged, (t for _, t in with_selfie), strict=True))
        for event, checkin, found in chunk:
            similarity = spoof = None
            if checkin.selfie is None:
                found.append(Finding(Reason.NO_SELFIE, {}))
            else:
                result, template = next(results)
                if isinstance(result, InvalidCheckin):
                    dlq.add(outbox, event, f"selfie: {result}", in_progress(checkin, []))
                    continue
                if template is None:
                    found.append(Finding(Reason.NO_TEMPLATE, {"nip": checkin.nip}))
                similarity, spoof = result.similarity, result.spoof_score
                found.extend(result.findings)
                again = replay.check_and_add(result.phash, checkin.event_id, checkin.nip,
                                             epoch_ms(checkin.server_time))
                if again:
                    found.append(again)
            m = event.message
            record = in_progress(checkin, found, similarity=similarity, spoof=spoof,
                                 source=f"{m.topic}[{m.partition}]@{m.offset}")
            outbox.add_item(topics.FACED.name, checkin.nip.encode(), faced_partitions,
                            faced.encode_item(record), faced.join)
        await outbox.send()

    return app
