"""Settings and error handling shared by the whole app."""
