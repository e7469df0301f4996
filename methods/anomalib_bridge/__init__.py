"""anomalib 2.x image models played under fsad-bench's K-shot protocol (plugin ``anomalib``).

Only ``catalog`` and ``models`` are importable without torch and anomalib; the rest imports
anomalib lazily, so the plugin class loads (and says what is missing) on machines without it.
"""
