"""The Brizo-shaped provider: access backends, the consume/info HTTP service and the agreement events handler."""
