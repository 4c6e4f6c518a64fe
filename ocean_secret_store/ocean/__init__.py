"""Ocean pipeline plugin: DIDs and DDOs, encryptors, the hook system and a Brizo-shaped provider."""
