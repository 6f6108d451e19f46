"""Every byte and sample source: simulator, serial, BLE, LSL, file replay. No thresholds."""

from devices.base import Device, DeviceError, DeviceInfo, LinkState, SampleBlock
from devices.registry import open_device

__all__ = ["Device", "DeviceError", "DeviceInfo", "LinkState", "SampleBlock", "open_device"]
