"""Prefect flows over the DVC pipeline: `flows.pipeline` (the nightly `dvc repro`) and
`flows.grid` (queued `dvc exp` grids)."""

import os

# Nothing may try the network. The Makefile exports these too; set them here as well so a
# flow started by hand (`python -m flows.grid`) does not log "Failed to send telemetry".
# setdefault: a value the user exported wins. This runs before any submodule imports prefect.
for _name, _value in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                      "DVC_NO_ANALYTICS": "1",
                      "GX_ANALYTICS_ENABLED": "false"}.items():
    os.environ.setdefault(_name, _value)
