"""Workflows: chains of jobs (`taskcut.jobs`) over files — the fleet, compare and its baselines, the demo.
What they write is drawn by `taskcut.report`."""
