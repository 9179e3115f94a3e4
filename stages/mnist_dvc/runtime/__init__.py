"""How a stage runs: the numeric profile, params reading and checks, progress lines, the memory check, the runner."""
