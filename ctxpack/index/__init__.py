"""The persistent index: content digests, the SQLite store, fingerprints, snapshots and deltas."""
