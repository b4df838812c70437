"""Experience mining: trajectories in, experience records (`distillery.types.Experience`) out.

- `instances`: instance-level experience, one record per distinct successful solution
  (its decisive, mutating calls), keyed by family and instruction.
- `pool`: the ExpeL principle pool: ADD/EDIT/AGREE/REMOVE ops with ExpeL's counters
  (`apply_ops`) and the reply format they are read from (`parse_ops`).
- `evidence`: trajectories grouped by task, each episode with its decisive calls.
- `rules`: the offline rules summariser (regularities of successful calls, contrasted with
  failures), worded through the environment's phrasebook or neutrally.
- `principles`: the summariser protocol, the LLM summariser (any OpenAI-compatible endpoint)
  and `update_pool`, which never loses the pool.
- `skills`: SIRI-style skills mined from successful episodes and validated in pairs.
- `inject`: global and step-wise injectors for the rollout engine, with TF-IDF and LLM
  selectors.
- `store`: pools as JSON lines, written atomically.

Nothing here imports torch.
"""
