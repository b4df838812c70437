"""Task drafting and validation for any registered environment (`generate.py`)."""
