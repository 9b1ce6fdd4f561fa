"""Imported by Python at start in test runs that put tests/hooks on $PYTHONPATH (see
signal_pause.py); absent from normal runs."""

import signal_pause

signal_pause.install()
