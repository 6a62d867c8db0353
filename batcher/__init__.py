"""The batcher: sequences accepted ballots into the public log as Merkle blocks with signed
checkpoints, one leader per referendum."""
