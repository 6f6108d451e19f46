#!/usr/bin/env python3
"""Start a biofeedback session. `python run_feedback.py --help` lists every option."""

import sys

from feedback.cli import main

if __name__ == "__main__":
    sys.exit(main())
