"""Tasks for any registered environment: generated from task families and validated
(`generate.py`), or drafted from hints by a model and kept only if they validate (`draft.py`,
with the draft format in `schema.py`, the screen in `screen.py`, the prompts in
`draft_prompts.py` and the stored attempts and kept drafts in `drafted.py`)."""
