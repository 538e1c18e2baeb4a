"""Actors: one package per bounded context, plus the shared runtime (actors.runtime)."""
