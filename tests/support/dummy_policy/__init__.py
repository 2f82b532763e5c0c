"""The `dummy` policy: a folder laid out like a built-in one (config, policy, entry), which
tests add to a temporary registry to prove that adding a policy touches nothing else."""
