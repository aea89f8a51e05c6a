"""Serving many prompts on one frozen model: the prompt bank (`bank`), the mixed-task classifier
(`classifier`) and the HTTP server (`server`)."""
