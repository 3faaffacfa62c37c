"""Mirror of aiperf's ``aiperf.timing`` package path (seed-compatible imports)."""
