"""The Nightscout REST API v1 subset that phone uploaders use, so xDrip+, AndroidAPS,
Juggluco or Loop can point at the gateway on the home LAN (docs/devices.md).

    POST /api/v1/entries[.json]      sgv entries -> glucose readings
    POST|PUT /api/v1/treatments[.json]  carbohydrates, insulin -> treatments (glucose plot)
    POST /api/v1/devicestatus[.json] the phone's battery
    GET  /api/v1/status[.json]       what clients check (xDrip+ polls it)
    GET  /api/v1/experiments/test    Loop's "is my secret right?"; verifyauth the same

Each phone is a provisioned device with its own secret (``edge-twin uploader issue``);
it authenticates with the SHA-1 hex digest of it in the ``api-secret`` header (Nightscout's
convention; api/access.py). The body goes, unchanged, to the ingest thread as a message on
the device's ``ns-entries`` / ``ns-treatments`` channel (ingest/inlet.py): the same decode,
dedupe, flags and quarantine as MQTT, and the answer comes only after the commit.

Answers follow what the clients check (cgm-remote-monitor's own replies): 200 with one
item per record posted (Loop compares the count), a stored record with a 24-hex ``_id``,
a refused one with ``edge_twin_rejected`` (its reason; it is in the quarantine, and sending
it again would not help); 400 only when the body as a whole is unusable (not JSON). A body
sent gzip-compressed (xDrip+ does, to servers it believes support it) is inflated, within
``ingest.max_upload_bytes``.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from edge_twin import __version__
from edge_twin.clock import Clock, to_iso
from edge_twin.config import Config
from edge_twin.domain import Device
from edge_twin.errors import IngestUnavailable
from edge_twin.ingest import BatchResult, Channel, Inlet, RawMessage, topic

# Clients wait for their answer at most this long (the ingest thread commits between MQTT
# batches: normally within a quarter of a second).
UPLOAD_TIMEOUT_S = 10.0


def _object_id(device_id: str, channel: Channel, doc: object) -> str:
    """A stable 24-hex-digit id (the shape of Nightscout's Mongo ids) for a stored record:
    the same record uploaded again gets the same id."""
    text = json.dumps([device_id, channel.value, doc], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def install(app: FastAPI, config: Config, clock: Clock, inlet: Callable[[], Inlet | None]) -> None:
    """Add the routes to ``app``; ``inlet``: the running ingest's, or None (a store
    served without ingest refuses uploads with 503)."""
    units = "mmol" if config.api.glucose_unit == "mmol/L" else "mg/dl"

    def status() -> dict[str, Any]:
        now = clock.now()
        return {
            "status": "ok",
            "name": "edge-twin",
            "version": __version__,
            "serverTime": to_iso(now),
            "serverTimeEpoch": int(now * 1000),
            "apiEnabled": True,
            "careportalEnabled": True,
            "boluscalcEnabled": False,
            "settings": {"units": units, "enable": ["careportal"], "authDefaultRoles": ""},
            "extendedSettings": {"devicestatus": {"advanced": False}},
            "authorized": None,
        }

    @app.get("/api/v1/status.json", include_in_schema=False)
    def status_json() -> dict[str, Any]:
        return status()

    @app.get("/api/v1/status")
    def nightscout_status() -> dict[str, Any]:
        """Nightscout's status document, for an uploader checking the server (api-secret)."""
        return status()

    @app.get("/api/v1/experiments/test")
    def experiments_test() -> dict[str, str]:
        """Loop's check of its secret (a wrong one gets 401 before this)."""
        return {"status": "ok"}

    @app.get("/api/v1/verifyauth")
    def verify_auth() -> dict[str, Any]:
        """Says the uploader's api-secret is right (a wrong one gets 401 before this)."""
        return {
            "status": 200,
            "message": {
                "message": "OK",
                "rolefound": "FOUND",
                "canRead": False,
                "canWrite": True,
                "isAdmin": False,
                "permissions": "ROLE",
            },
        }

    async def upload(request: Request, channel: Channel) -> JSONResponse:
        device: Device = request.state.uploader  # set by the access rule (api/access.py)
        limit = config.ingest.max_upload_bytes
        body = await _bounded_body(request, limit)
        if request.headers.get("content-encoding", "").lower() == "gzip":
            body = await run_in_threadpool(_inflate, body, limit)  # off the event loop
        running = inlet()
        if running is None:
            raise HTTPException(503, "this gateway serves its store without ingest: not stored")
        message = RawMessage(
            topic(config.mqtt.topic_prefix, device.device_id, channel), body, clock.now(), True
        )
        try:
            result = await running.submit([message], UPLOAD_TIMEOUT_S)
        except IngestUnavailable as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from exc
        return await run_in_threadpool(_answer, device, channel, body, result)

    @app.post("/api/v1/entries")
    async def post_entries(request: Request) -> JSONResponse:
        """sgv entries from the patient's phone (one object or an array): stored as glucose
        readings of the uploader's patient, after the commit."""
        return await upload(request, Channel.NS_ENTRIES)

    @app.post("/api/v1/entries.json", include_in_schema=False)
    async def post_entries_json(request: Request) -> JSONResponse:
        return await upload(request, Channel.NS_ENTRIES)

    @app.post("/api/v1/treatments")
    async def post_treatments(request: Request) -> JSONResponse:
        """Treatments (carbs, insulin; other events as notes) from the patient's phone."""
        return await upload(request, Channel.NS_TREATMENTS)

    @app.post("/api/v1/treatments.json", include_in_schema=False)
    async def post_treatments_json(request: Request) -> JSONResponse:
        return await upload(request, Channel.NS_TREATMENTS)

    @app.put("/api/v1/treatments")
    async def put_treatments(request: Request) -> JSONResponse:
        """xDrip+'s and Juggluco's way of sending a treatment (an upsert, one object):
        stored once per (phone, time, event type), like a POST."""
        return await upload(request, Channel.NS_TREATMENTS)

    @app.post("/api/v1/devicestatus")
    async def post_device_status(request: Request) -> JSONResponse:
        """The phone's status: its battery is kept as the uploader device's."""
        return await upload(request, Channel.NS_DEVICESTATUS)

    @app.post("/api/v1/devicestatus.json", include_in_schema=False)
    async def post_device_status_json(request: Request) -> JSONResponse:
        return await upload(request, Channel.NS_DEVICESTATUS)


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (read no further than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"uploads are limited to {limit} bytes: send fewer records")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"uploads are limited to {limit} bytes: send fewer records")
        chunks.append(chunk)
    return b"".join(chunks)


def _inflate(body: bytes, limit: int) -> bytes:
    """A gzip body, inflated to at most ``limit`` bytes (413 beyond: a zip bomb is not read)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HTTPException(400, f"the body is not valid gzip: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise HTTPException(413, f"uploads are limited to {limit} bytes: send fewer records")
    return out


def _answer(device: Device, channel: Channel, body: bytes, result: BatchResult) -> JSONResponse:
    """What a Nightscout client expects back: 200 with an item per record posted, the
    stored ones with an ``_id``, the refused ones with their reason (all quarantined);
    400 when the body as a whole was refused."""
    _readings, _treatments, rejections = result.per_message[0]
    whole = [r for r in rejections if r.record_index is None]
    if whole:
        detail = "; ".join(f"{r.reason.value}: {r.detail}" for r in whole)
        return JSONResponse({"status": 400, "message": detail}, 400)
    refused = {r.record_index: r for r in rejections}
    parsed = json.loads(body)  # it decoded without a whole-body rejection: it is JSON
    answered = []
    for index, doc in enumerate(parsed if isinstance(parsed, list) else [parsed]):
        item = dict(doc) if isinstance(doc, dict) else {"value": doc}
        rejection = refused.get(index)
        if rejection is None:
            item["_id"] = _object_id(device.device_id, channel, doc)
        else:
            item["edge_twin_rejected"] = f"{rejection.reason.value}: {rejection.detail}"
        answered.append(item)
    headers = {"X-Edge-Twin-Rejected": str(len(rejections))}
    return JSONResponse(answered, 200, headers=headers)
