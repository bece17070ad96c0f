"""aplex's benchmark suite: aplex against its peers, each in a fresh process.

Run ``python -m benchmarks.run --help``; see ``docs/performance.md``.
"""
