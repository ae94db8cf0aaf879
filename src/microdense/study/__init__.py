"""Studies: each claim of the paper as a runnable, resumable, shardable experiment (`microdense study`)."""
