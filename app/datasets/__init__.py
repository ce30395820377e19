"""Uploaded price datasets: a checked CSV and its data report per name, and rows appended to them.

`store` keeps the files (read by the API and by training processes),
`rows` judges appended rows against a dataset without touching a file,
`locks` serialises the changes to one dataset.
See docs/design.md, "Layout: which process runs what" and "Appending rows".
"""

from app.datasets.store import DatasetExistsError, DatasetStore

__all__ = ["DatasetExistsError", "DatasetStore"]
