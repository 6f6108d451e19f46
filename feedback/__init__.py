"""Processing, exercise logic, cues, outputs and the pipeline that wires them."""
