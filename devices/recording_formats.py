"""Readers for recorded surface-EMG files: kept as the import path existing callers use.

The readers live in `devices.formats` (one module per format and a dispatcher); see there.
"""

from __future__ import annotations

from devices.formats import (
    FORMATS,
    Annotation,
    Recording,
    RecordingFormatError,
    RecordingStream,
    load_recording,
    open_recording,
    select_channels,
)

__all__ = [
    "FORMATS",
    "Annotation",
    "Recording",
    "RecordingFormatError",
    "RecordingStream",
    "load_recording",
    "open_recording",
    "select_channels",
]
