"""The chain language: models, loading with locations, graph checks, planner and diff.

Pure by rule: nothing in this package opens files, sockets or sysfs, reads the clock, or
imports `flashctl.backends` or the CLI (a test enforces it). Submodules are imported
explicitly by their users so that importing the package itself stays cheap.
"""
