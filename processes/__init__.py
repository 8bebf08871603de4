"""Processes (running workflows), their step log, the engine and its executors."""
