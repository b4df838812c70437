"""One thin module per DVC stage: `python -m stages.<name> --help` says what each reads and writes."""
