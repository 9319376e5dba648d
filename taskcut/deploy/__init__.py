"""Deployment: export to edge runtimes with parity checks, and latency/size benchmarks."""
