"""Inspection cell controller: cell logic in `controller.core`, I/O at the edges."""

__version__ = "0.1.0"
