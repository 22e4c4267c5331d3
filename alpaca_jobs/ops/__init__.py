"""Run records, prices, GPU-hours and cost. Torch-free: the CLI reads these fast."""
