"""Stage 0: datasets (layout, validation, lazy features), the simulated benchmark, converters."""
