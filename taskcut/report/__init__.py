"""Reports: tables, plots and pages drawn from what the workflows wrote (results only; nothing is run here)."""
