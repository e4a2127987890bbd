"""Performance benchmarks of SPEC §7: ratios measured side by side in one process (`make bench`)."""
