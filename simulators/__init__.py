"""Stand-ins that speak the real protocols: conveyor, cameras, S7 PLC, reject actuator, scorer."""
