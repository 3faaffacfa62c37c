"""Mirror of aiperf's ``aiperf.common`` package path (seed-compatible imports)."""
