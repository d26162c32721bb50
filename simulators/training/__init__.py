"""Training of the demo model on the simulator's synthetic images (needs the `train` extra)."""
