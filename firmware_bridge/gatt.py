"""BLE GATT layout for the same byte stream: one service, one notify and one write characteristic.

BLE carries exactly the serial byte stream (COBS frames, 0x00 delimited). Notifications and
writes are just transport chunks: a frame may be split over several of them and one may carry
the end of a frame and the start of the next, so the receiver feeds every chunk to
`Connection.receive_data` as is. The UUIDs are custom 128-bit ones sharing a base, with the
16 bits after the first four hex digits telling the roles apart (the Nordic UART convention).
"""

from __future__ import annotations

__all__ = [
    "ATT_HEADER_BYTES",
    "DEVICE_TO_HOST_UUID",
    "HOST_TO_DEVICE_UUID",
    "SERVICE_UUID",
    "chunk_for_mtu",
]

SERVICE_UUID = "6e910001-3162-43e0-8dd7-e2e5bc4130fc"
DEVICE_TO_HOST_UUID = "6e910002-3162-43e0-8dd7-e2e5bc4130fc"  # notify: samples, status, acks
HOST_TO_DEVICE_UUID = "6e910003-3162-43e0-8dd7-e2e5bc4130fc"  # write without response

ATT_HEADER_BYTES = 3  # opcode + handle: a notification or write carries at most MTU - 3 bytes


def chunk_for_mtu(data: bytes, att_mtu: int) -> list[bytes]:
    """Split a byte stream into notification/write payloads for an ATT MTU (23 by default)."""
    size = att_mtu - ATT_HEADER_BYTES
    if size < 1:
        raise ValueError(f"ATT MTU {att_mtu} leaves no room for data")
    return [data[i : i + size] for i in range(0, len(data), size)]
