"""nai3eval: everything from a checkpoint to numbers (samplers, sweep, metrics, probes)."""
