"""Offline batch scoring: config, plan (every check before any work), the run (Ray Data ->
actor pool -> per-file commit), the actor, the output directory and the actors' allocator."""
