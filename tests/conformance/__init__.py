"""The external conformance suite: programs from other projects, read from conformance_dir() at test time."""
