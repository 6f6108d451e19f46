"""Pure, synchronous signal processing: no I/O, no await. Same output for any block split."""

from feedback.processing.activation import BandDetector, Zone
from feedback.processing.chain import EmgChain, ProcessedBlock

__all__ = ["BandDetector", "EmgChain", "ProcessedBlock", "Zone"]
