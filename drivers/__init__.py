"""Hardware drivers: one module per family, each behind the controller's small interfaces."""
