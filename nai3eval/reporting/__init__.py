"""Code that shows measurements — sinks, sample grids, the points table, plots, the report — and
reads the measurement record only. Outside the evaluation identity (``flows/identity.py``), like
``nai3eval/claims``: an edit here re-renders from the stored records; nothing is sampled again.
"""
