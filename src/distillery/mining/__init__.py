"""Experience mining: trajectories in, experience records (`distillery.types.Experience`) out.

- `instances`: instance-level experience, one record per distinct successful solution
  (its decisive, mutating calls), keyed by family and instruction.
- `principles`: the ExpeL principle pool: ADD/EDIT/AGREE/REMOVE ops with ExpeL's counters
  (`apply_ops`), an offline rules summariser and an LLM summariser (any OpenAI-compatible
  endpoint), and `update_pool`, which never loses the pool.
- `inject`: global and step-wise injectors for the rollout engine, with TF-IDF and LLM
  selectors.
- `store`: pools as JSON lines, written atomically.

Nothing here imports torch.
"""
