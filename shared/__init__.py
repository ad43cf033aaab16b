"""What every model in this project shares: data, sharding, the train loop, checkpoints, outputs."""
