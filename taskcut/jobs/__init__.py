"""The jobs every command runs, one code path for every model source.

A model source (`taskcut.jobs.source`) is a taskcut model file with its data (`--data`), or
an own model's YAML naming its factory, weights, tasks and data: two ways to name the same
thing. Each job (`score`, `prune`, ...) takes a source and one settings object
(`taskcut.jobs.settings`) and returns a record; the command line, the fleet and the Python
API call the same functions, so an option works alike for both sources or is refused in
one line.
"""
