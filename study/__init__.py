"""Orchestration of bnn-study: config, runs, tracking, search and ablations."""
