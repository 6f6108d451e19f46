"""Therapist dashboard and patient view (pyqtgraph + PySide6), fed from the session process.

`feed` (pure numpy, no Qt) turns Ticks into compact `DashFrame`s; `process` runs the windows in
their own process behind a latest-wins queue; `therapist` and `patient` are the widgets.
"""
