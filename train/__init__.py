"""train: the lean trainer that streams ``augment`` shards (arrives with the trainer issue)."""
