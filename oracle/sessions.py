"""Vehicle sessions that charging stations' meters declare on chain (``declareSessions``).

A charger knows when a vehicle is plugged in; its meter declares the session in a
``SessionsDeclared`` event: 16-byte records, every field big-endian (``SESSION_DTYPE``):
uint32 device id, uint32 ``arrive_s`` (unix s the vehicle connected), uint32 ``depart_s`` (unix s
it will leave), uint32 ``energy_wh`` (the energy it asks for). The contract checks only the
sender's METER_ROLE and the length; a record counts (``session_rejection``, rules
``SESSION_RULES``) only when

* ``unknown_device``: its device is registered,
* ``not_station``: and is a charging station,
* ``meter``: the event's meter is the device's registered meter,
* ``times``: ``arrive_s < depart_s`` and the session lasts at most ``MAX_SESSION_S`` (7 days),
* ``window``: the session concerns the block's time: it arrives at most
  ``ReadingWindow.max_ahead_s`` after the block (clock skew, never a booking for later) and
  departs at most ``max_age_s`` before it (a head-end posting late),
* ``energy``: ``energy_wh <= MAX_SESSION_WH``.

A later declaration of the same device and ``arrive_s`` replaces an earlier one (a vehicle that
leaves early is declared again with the new ``depart_s``). With
``OcmSettings.station_sessions`` the oracle gives a band and the guaranteed minimum only to the
stations with a session in the interval (``connected_stations``); the others get [0, 0] W.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from hexbytes import HexBytes

from oracle.registry import DEFAULT_WINDOW, DeviceRegistry, ReadingWindow, unpack_records

SESSION_DTYPE = np.dtype([("device_id", ">u4"), ("arrive_s", ">u4"), ("depart_s", ">u4"),
                          ("energy_wh", ">u4")])
SESSION_FIELDS: tuple[str, ...] = tuple(SESSION_DTYPE.names or ())
SESSION_BYTES = SESSION_DTYPE.itemsize  # 16, GridCapacity.SESSION_BYTES
#: Longest session a meter may declare (s): a week.
MAX_SESSION_S = 7 * 86_400
#: Most energy a session may ask for (Wh): above any passenger or light-commercial vehicle's
#: battery.
MAX_SESSION_WH = 250_000
SESSION_RULES = ("unknown_device", "not_station", "meter", "times", "window", "energy")


def encode_sessions(records: Iterable[Iterable[int]]) -> bytes:
    """Pack sessions ((n, 4) integers in ``SESSION_FIELDS`` order) into the contract's layout;
    a field outside uint32 is refused (ValueError), never wrapped."""
    arr = np.array(list(records), dtype=object)
    if arr.ndim != 2 or arr.shape[1] != len(SESSION_FIELDS) or arr.shape[0] == 0:
        raise ValueError(f"sessions must have shape (n >= 1, 4), got {arr.shape}")
    if any(not isinstance(v, int | np.integer) or not 0 <= int(v) <= 0xFFFFFFFF
           for v in arr.ravel()):
        raise ValueError(f"every session field must be an integer in 0..{0xFFFFFFFF}")
    return np.array([tuple(int(v) for v in row) for row in arr], dtype=SESSION_DTYPE).tobytes()


def decode_sessions(packed: bytes) -> np.ndarray:
    """The records of a ``SessionsDeclared`` blob (fields ``SESSION_FIELDS``)."""
    return unpack_records(packed, SESSION_DTYPE, "sessions")


def session_rejection(session: Mapping[str, int], registry: DeviceRegistry, *,
                      block_time_s: int, meter: str,
                      window: ReadingWindow = DEFAULT_WINDOW) -> tuple[str, str] | None:
    """(rule, reason) of the first rule (``SESSION_RULES``) a declared session breaks; None when
    it counts."""
    device = registry.devices.get(int(session["device_id"]))
    if device is None or device.role == "unknown":
        return "unknown_device", f"unknown device {session['device_id']}"
    if device.kind != "charging_station":
        return "not_station", f"device {device.device_id} is a {device.kind}, not a station"
    if not device.meter or meter.lower() != device.meter.lower():
        return "meter", f"declared by {meter}, but the station's meter is {device.meter or 'unset'}"
    arrive, depart = int(session["arrive_s"]), int(session["depart_s"])
    if not arrive < depart <= arrive + MAX_SESSION_S:
        return "times", (f"session {arrive}..{depart} s: must depart after it arrives and "
                         f"within {MAX_SESSION_S} s")
    if arrive > block_time_s + window.max_ahead_s or depart < block_time_s - window.max_age_s:
        return "window", (f"session {arrive}..{depart} s does not concern its block's time "
                          f"{block_time_s} (arrive at most {window.max_ahead_s} s after it, "
                          f"depart at most {window.max_age_s} s before it)")
    if int(session["energy_wh"]) > MAX_SESSION_WH:
        return "energy", f"{session['energy_wh']} Wh asked, more than {MAX_SESSION_WH} Wh"
    return None


def session_rows(events: Iterable[Any], registry: DeviceRegistry, block_times: Mapping[int, int],
                 window: ReadingWindow = DEFAULT_WINDOW) -> list[tuple[Any, ...]]:
    """The records of ``SessionsDeclared`` logs ``events`` as rows in the oracle store's
    ``SESSION_COLUMNS`` order: tx hash, log index, position, block, meter, the four fields, and
    the (rule, reason) that rejects it (None, None: accepted). ``block_times``: unix s of each
    event's block."""
    rows = []
    for e in events:
        meter, block = str(e["args"]["meter"]), int(e["blockNumber"])
        key = (HexBytes(e["transactionHash"]).to_0x_hex(), int(e["logIndex"]))
        for position, record in enumerate(decode_sessions(e["args"]["packed"]).tolist()):
            session = dict(zip(SESSION_FIELDS, (int(v) for v in record), strict=True))
            verdict = session_rejection(session, registry, block_time_s=block_times[block],
                                        meter=meter, window=window) or (None, None)
            rows.append((*key, position, block, meter, *session.values(), *verdict))
    return rows


def connected_stations(sessions: Iterable[Mapping[str, Any]], start_s: int, end_s: int
                       ) -> list[int]:
    """Device ids (sorted) of the stations with a vehicle connected during ``[start_s,
    end_s)``: the accepted ``sessions`` (rows with ``device_id``, ``arrive_s``, ``depart_s``
    and their order on chain ``block_number``, ``log_index``, ``position``), the latest
    declaration of each (device, arrive_s) counting."""
    latest: dict[tuple[int, int], Mapping[str, Any]] = {}
    for s in sorted(sessions, key=lambda r: (r["block_number"], r["log_index"], r["position"])):
        latest[(int(s["device_id"]), int(s["arrive_s"]))] = s
    return sorted({d for (d, arrive), s in latest.items()
                   if arrive < end_s and int(s["depart_s"]) > start_s})
