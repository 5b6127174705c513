"""The virtual clock and the orchestrator that drives actors in virtual-time order."""
