"""A readable timeline of one patient, for `build_patient_files.py inspect`."""
from __future__ import annotations

import datetime as dt

import numpy as np

from ..record import KNOWN_NEVER
from .store import open_version


def _when(seconds) -> str:
    if seconds is None:
        return "-"
    return (dt.datetime(1970, 1, 1) + dt.timedelta(seconds=int(seconds))).strftime(
        "%Y-%m-%d %H:%M")


def _known(delta: int) -> str:
    """When an event became known, after its time (nothing when at it)."""
    if delta == KNOWN_NEVER:
        return " (known: never)"
    return f" (known +{delta / 3600:.1f} h)" if delta else ""


def timeline(version_dir, subject_id: int, limit: int = 200) -> str:
    v = open_version(version_dir)
    try:
        p = v.patient(subject_id)
    except KeyError as e:
        raise ValueError(str(e.args[0])) from e
    sources = v.meta["sources"]
    s = p.static
    lines = [f"subject {p.subject_id}: {s['gender']}, anchor age {s['anchor_age']} in "
             f"{s['anchor_year']}, born ~{_when(s['birth_time'])[:4]}, "
             f"died {_when(s['dod'])[:10] if s['dod'] is not None else 'no'}; "
             f"{len(p.admissions.get('hadm_id', []))} admissions, "
             f"{len(p.stays.get('stay_id', []))} ICU stays, {len(p)} events, "
             f"{len(set(p.notes['note_id']))} notes"]
    for i in range(min(len(p), limit)):
        e = {k: a[i] for k, a in p.events.items()}
        value = "" if np.isnan(e["value"]) else f" = {e['value']:.6g}"
        text = p.text(i)
        if text is not None:
            text = text.replace("\n", " ")
            value += f" '{text[:60]}{'…' if len(text) > 60 else ''}'"
        flags = f" flags={e['flags']:#04x}" if e["flags"] else ""
        lines.append(f"{_when(e['time'])}  {sources[str(e['source'])]:<18} {p.codes[i]}"
                     f"{value}{flags}{_known(int(e['known_delta']))}")
    if len(p) > limit:
        lines.append(f"... {len(p) - limit} more events (--limit)")
    return "\n".join(lines)
