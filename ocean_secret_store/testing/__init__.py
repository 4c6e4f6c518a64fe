"""Helpers that the tests and the benches share: fakes and test-only maths, kept out of the runtime
modules. Nothing in the rest of the package imports from here (the layering test checks it).
"""
