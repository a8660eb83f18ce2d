"""Chaos tests: real peers, a seeded fault scheduler, a concurrent workload, and a checker
proving that nothing acknowledged is lost (see `tests.chaos.checker` for the rules)."""
