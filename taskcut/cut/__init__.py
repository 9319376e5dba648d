"""The CUT method, one stage a module: decompose -> select -> score -> fuse (and budgets)."""
