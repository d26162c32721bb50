"""Pure cell logic: events in, decisions out. No I/O, no threads, no clocks of its own."""
