"""shiftctl: control tool and VM harness for the shiftfs filesystem."""

__version__ = "0.1.0"
