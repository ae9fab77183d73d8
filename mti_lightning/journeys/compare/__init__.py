"""Architecture comparison and the aggregation of sweeps: many models or runs, one table."""
